-- Structure of the outbox schema: tables, columns, types, defaults, indexes, constraints,
-- triggers, functions, views, roles and per-table autovacuum settings.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(176);

SELECT has_schema('outbox');
SELECT tables_are('outbox', ARRAY['messages', 'message_recipients', 'events', 'settings', 'dispatcher_idle', 'dispatcher_sessions',
                                  'retention_state', 'message_keys', 'retention_cleanup']
                  || CASE WHEN to_regclass('outbox.schema_migrations') IS NULL THEN '{}'::name[]
                          ELSE ARRAY['schema_migrations']::name[] END);

-- messages
SELECT columns_are('outbox', 'messages', ARRAY[
    'id', 'message_id', 'sender', 'recipients', 'cc', 'bcc', 'reply_to', 'subject', 'body_text',
    'body_html', 'headers', 'idempotency_key', 'key', 'priority', 'not_before', 'max_attempts',
    'state', 'attempts', 'next_attempt_at', 'lease_owner', 'lease_expires_at', 'last_smtp_code',
    'last_error', 'outcome_unknown', 'created_at', 'sent_at', 'updated_at']);
SELECT col_type_is('outbox', 'messages', c, t, 'outbox.messages.' || c || ' is ' || t)
  FROM (VALUES ('id', 'bigint'), ('message_id', 'text'), ('sender', 'text'), ('recipients', 'text[]'),
               ('cc', 'text[]'), ('bcc', 'text[]'), ('reply_to', 'text'), ('subject', 'text'),
               ('body_text', 'text'), ('body_html', 'text'), ('headers', 'jsonb'),
               ('idempotency_key', 'text'), ('key', 'text'), ('priority', 'integer'),
               ('not_before', 'timestamp with time zone'), ('max_attempts', 'integer'), ('state', 'text'),
               ('attempts', 'integer'), ('next_attempt_at', 'timestamp with time zone'),
               ('lease_owner', 'text'), ('lease_expires_at', 'timestamp with time zone'),
               ('last_smtp_code', 'integer'), ('last_error', 'text'), ('outcome_unknown', 'boolean'),
               ('created_at', 'timestamp with time zone'), ('sent_at', 'timestamp with time zone'),
               ('updated_at', 'timestamp with time zone')) AS x(c, t);
SELECT col_not_null('outbox', 'messages', c, 'outbox.messages.' || c || ' is NOT NULL')
  FROM unnest(ARRAY['id', 'message_id', 'recipients', 'cc', 'bcc', 'subject', 'headers', 'priority',
                    'max_attempts', 'state', 'attempts', 'next_attempt_at', 'outcome_unknown',
                    'created_at']) AS c;
SELECT col_is_null('outbox', 'messages', c, 'outbox.messages.' || c || ' allows NULL')
  FROM unnest(ARRAY['sender', 'reply_to', 'body_text', 'body_html', 'idempotency_key', 'key',
                    'not_before', 'lease_owner', 'lease_expires_at', 'last_smtp_code', 'last_error',
                    'sent_at']) AS c;
SELECT col_default_is('outbox', 'messages', 'cc', '{}'::text, 'messages.cc default');
SELECT col_default_is('outbox', 'messages', 'bcc', '{}'::text, 'messages.bcc default');
SELECT col_default_is('outbox', 'messages', 'subject', ''::text, 'messages.subject default');
SELECT col_default_is('outbox', 'messages', 'headers', '{}'::text, 'messages.headers default');
SELECT col_default_is('outbox', 'messages', 'priority', 0, 'messages.priority default');
SELECT col_default_is('outbox', 'messages', 'max_attempts', 10, 'messages.max_attempts default');
SELECT col_default_is('outbox', 'messages', 'state', 'pending'::text, 'messages.state default');
SELECT col_default_is('outbox', 'messages', 'attempts', 0, 'messages.attempts default');
SELECT col_default_is('outbox', 'messages', 'outcome_unknown', false, 'messages.outcome_unknown default');
SELECT col_default_is('outbox', 'messages', 'created_at', 'now()', 'messages.created_at default');
SELECT col_is_pk('outbox', 'messages', 'id', 'messages.id is the primary key');
SELECT col_is_unique('outbox', 'messages', 'message_id', 'messages.message_id is unique');
SELECT col_is_unique('outbox', 'messages', 'idempotency_key', 'messages.idempotency_key is unique');
SELECT is((SELECT attidentity::text FROM pg_attribute
            WHERE attrelid = 'outbox.messages'::regclass AND attname = 'id'), 'a',
          'messages.id is an identity column');
SELECT has_check('outbox', 'messages', 'messages has CHECK constraints');
SELECT is(ARRAY(SELECT conname::text FROM pg_constraint
                 WHERE conrelid = 'outbox.messages'::regclass AND contype = 'c' ORDER BY conname),
          ARRAY['messages_attempts_nonnegative', 'messages_body_present', 'messages_headers_object',
                'messages_max_attempts_range', 'messages_recipients_nonempty', 'messages_sending_has_lease',
                'messages_state_valid'],
          'messages has its named CHECK constraints');
SELECT indexes_are('outbox', 'messages', ARRAY['messages_pkey', 'messages_message_id_key',
                   'messages_idempotency_key_key', 'messages_claim_idx', 'messages_lease_idx',
                   'messages_finished_bad_idx']);
SELECT is(pg_get_indexdef('outbox.messages_claim_idx'::regclass),
          'CREATE INDEX messages_claim_idx ON outbox.messages USING btree (priority DESC, next_attempt_at, id) WHERE (state = ''pending''::text)',
          'claim index: (priority DESC, next_attempt_at, id) over pending rows only');
SELECT is(pg_get_indexdef('outbox.messages_lease_idx'::regclass),
          'CREATE INDEX messages_lease_idx ON outbox.messages USING btree (lease_expires_at) WHERE (state = ''sending''::text)',
          'lease index: lease_expires_at over sending rows only');
SELECT triggers_are('outbox', 'messages', ARRAY['messages_before_insert', 'messages_before_update',
                    'messages_after_insert', 'messages_wake']);

-- message_recipients
SELECT columns_are('outbox', 'message_recipients', ARRAY['message', 'address', 'kind', 'state', 'smtp_code',
                   'last_error', 'attempts', 'updated_at']);
SELECT col_type_is('outbox', 'message_recipients', c, t, 'outbox.message_recipients.' || c || ' is ' || t)
  FROM (VALUES ('message', 'bigint'), ('address', 'text'), ('kind', 'text'), ('state', 'text'),
               ('smtp_code', 'integer'), ('last_error', 'text'), ('attempts', 'integer'),
               ('updated_at', 'timestamp with time zone')) AS x(c, t);
SELECT col_is_pk('outbox', 'message_recipients', ARRAY['message', 'address']::name[], 'message_recipients primary key');
SELECT fk_ok('outbox', 'message_recipients', 'message', 'outbox', 'messages', 'id');
SELECT is((SELECT confdeltype::text FROM pg_constraint
            WHERE conrelid = 'outbox.message_recipients'::regclass AND contype = 'f'), 'c',
          'message_recipients rows are deleted with their message');

-- events
SELECT columns_are('outbox', 'events', ARRAY['id', 'event_id', 'aggregate_type', 'aggregate_id', 'type',
                   'payload', 'topic', 'headers', 'message_id', 'created_at', 'txid', 'state',
                   'published_at', 'kafka_partition', 'kafka_offset', 'last_error']);
SELECT col_type_is('outbox', 'events', c, t, 'outbox.events.' || c || ' is ' || t)
  FROM (VALUES ('id', 'bigint'), ('event_id', 'uuid'), ('aggregate_type', 'text'), ('aggregate_id', 'text'),
               ('type', 'text'), ('payload', 'jsonb'), ('topic', 'text'), ('headers', 'jsonb'),
               ('message_id', 'bigint'), ('created_at', 'timestamp with time zone'), ('txid', 'xid8'),
               ('state', 'text'), ('published_at', 'timestamp with time zone'),
               ('kafka_partition', 'integer'), ('kafka_offset', 'bigint'), ('last_error', 'text')) AS x(c, t);
SELECT col_not_null('outbox', 'events', c, 'outbox.events.' || c || ' is NOT NULL')
  FROM unnest(ARRAY['id', 'event_id', 'aggregate_type', 'aggregate_id', 'type', 'payload', 'headers',
                    'txid', 'state', 'created_at']) AS c;
SELECT col_default_is('outbox', 'events', 'event_id', 'gen_random_uuid()', 'events.event_id default');
SELECT col_default_is('outbox', 'events', 'txid', 'pg_current_xact_id()', 'events.txid default');
SELECT col_default_is('outbox', 'events', 'state', 'pending'::text, 'events.state default');
SELECT col_is_pk('outbox', 'events', 'id', 'events.id is the primary key');
SELECT is(pg_get_indexdef('outbox.events_pending_idx'::regclass),
          'CREATE INDEX events_pending_idx ON outbox.events USING btree (id) WHERE (state = ''pending''::text)',
          'events reader index: id over pending rows only');
SELECT triggers_are('outbox', 'events', ARRAY['events_before_insert', 'events_before_update', 'events_wake']);

-- settings, dispatcher_idle
SELECT columns_are('outbox', 'settings', ARRAY['id', 'message_id_domain', 'lifecycle_events', 'layout',
                                               'partition_period', 'session_grace_seconds']);
SELECT is((SELECT count(*)::int FROM outbox.settings), 1, 'settings is seeded with one row');
SELECT is((SELECT message_id_domain FROM outbox.settings), 'outboxd.invalid', 'default Message-ID domain');
SELECT is((SELECT lifecycle_events FROM outbox.settings), true, 'lifecycle events on by default');
SELECT throws_ok($$INSERT INTO outbox.settings (id) VALUES (false)$$, '23514', NULL,
                 'settings cannot hold a second row');
SELECT columns_are('outbox', 'dispatcher_idle', ARRAY['owner', 'channel', 'since', 'backend_pid']);
SELECT col_is_pk('outbox', 'dispatcher_idle', ARRAY['owner', 'channel']::name[], 'dispatcher_idle primary key');

-- autovacuum per table
SELECT ok((SELECT reloptions @> ARRAY['autovacuum_vacuum_scale_factor=0', 'autovacuum_vacuum_threshold=5000',
                                      'autovacuum_vacuum_insert_scale_factor=0',
                                      'autovacuum_analyze_scale_factor=0.01', 'autovacuum_vacuum_cost_delay=0']
             FROM pg_class WHERE oid = t::regclass), t || ' has queue autovacuum settings')
  FROM unnest(ARRAY['outbox.messages', 'outbox.message_recipients', 'outbox.events']) AS t;

-- functions and views
SELECT has_function('outbox', 'claim', ARRAY['text', 'integer', 'integer']);
SELECT has_function('outbox', 'complete', ARRAY['text', 'jsonb']);
SELECT has_function('outbox', 'release', ARRAY['text', 'bigint[]']);
SELECT has_function('outbox', 'release_owner', ARRAY['text']);
SELECT has_function('outbox', 'renew', ARRAY['text', 'bigint[]', 'integer']);
SELECT has_function('outbox', 'release', ARRAY['text', 'bigint[]', 'integer[]']);
SELECT has_function('outbox', 'renew', ARRAY['text', 'bigint[]', 'integer[]', 'integer']);
SELECT has_function('outbox', 'set_idle', ARRAY['text', 'boolean', 'text']);
SELECT has_function('outbox', 'cancel', ARRAY['bigint']);
SELECT has_function('outbox', 'requeue', ARRAY['bigint']);
SELECT function_returns('outbox', 'complete', ARRAY['text', 'jsonb'], 'setof bigint');
SELECT function_returns('outbox', 'cancel', ARRAY['bigint'], 'boolean');
SELECT function_returns('outbox', 'requeue', ARRAY['bigint'], 'boolean');
SELECT function_returns('outbox', 'release', ARRAY['text', 'bigint[]'], 'integer');
SELECT is_definer('outbox', f, a, 'outbox.' || f || ' is SECURITY DEFINER')
  FROM (VALUES ('claim', ARRAY['text', 'integer', 'integer']), ('complete', ARRAY['text', 'jsonb']),
               ('release', ARRAY['text', 'bigint[]']), ('release_owner', ARRAY['text']),
               ('renew', ARRAY['text', 'bigint[]', 'integer']), ('set_idle', ARRAY['text', 'boolean', 'text']),
               ('release', ARRAY['text', 'bigint[]', 'integer[]']),
               ('renew', ARRAY['text', 'bigint[]', 'integer[]', 'integer']),
               ('cancel', ARRAY['bigint']), ('requeue', ARRAY['bigint'])) AS x(f, a);
SELECT ok(EXISTS (SELECT 1 FROM pg_proc WHERE oid = to_regprocedure(s)
                    AND proconfig @> ARRAY['search_path=pg_catalog, outbox']),
          s || ' pins its search_path')
  FROM unnest(ARRAY['outbox.claim(text,integer,integer)', 'outbox.complete(text,jsonb)',
                    'outbox.cancel(bigint)', 'outbox.requeue(bigint)',
                    'outbox.release(text,bigint[],integer[])', 'outbox.renew(text,bigint[],integer[],integer)']) AS s;
SELECT views_are('outbox', ARRAY['message_status', 'recipient_status', 'queue_depth', 'queue_health',
                 'mirror_lag', 'queue_depth_estimate']);
SELECT has_column('outbox', 'message_status', c, 'message_status has ' || c)
  FROM unnest(ARRAY['id', 'message_id', 'state', 'attempts', 'last_smtp_code', 'last_error', 'created_at',
                    'sent_at', 'next_attempt_at', 'outcome_unknown']) AS c;

-- roles
SELECT has_role('outbox_producer');
SELECT has_role('outbox_dispatcher');
SELECT ok(NOT rolcanlogin, rolname || ' is a NOLOGIN group role')
  FROM pg_roles WHERE rolname IN ('outbox_producer', 'outbox_dispatcher');

SELECT * FROM finish();
ROLLBACK;
