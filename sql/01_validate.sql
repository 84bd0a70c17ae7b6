-- Input validation for producer rows: address syntax, header injection, header shape, size
-- caps, and the Message-ID fixed at insert. Re-applied on every migrate (idempotent).
-- Every refusal is ERRCODE 23514 (check_violation) with a message "outbox.<table>.<field>: why",
-- except a producer-supplied message_id, which is 428C9 (generated_always).

-- Returns NULL when addr is an acceptable addr-spec (local@domain), else the reason.
-- Deliberately narrower than RFC 5321: an ASCII dot-atom local part of at most 64 octets (no
-- quoted local parts) and a domain of two or more LDH labels whose last starts with a letter
-- (internationalised domains as xn-- A-labels); no address literals (user@[192.0.2.1]).
-- dispatcher/address.c applies the same checks in the same order (docs/sql.md, "Addresses";
-- the cases both follow are in tests/data/addresses.tsv).
CREATE OR REPLACE FUNCTION outbox.addr_spec_problem(addr text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT CASE
        WHEN addr IS NULL THEN 'NULL address'
        WHEN addr ~ '[\r\n]' THEN 'contains CR or LF'
        WHEN addr = '' THEN 'empty address'
        WHEN octet_length(addr) > 254 THEN 'address longer than 254 characters'
        WHEN addr ~ '[^\x01-\x7f]' THEN 'non-ASCII address (give an internationalised domain as xn-- A-labels)'
        WHEN position('@[' IN addr) > 0 THEN 'address literal (user@[...]) not accepted: use a domain name'
        WHEN addr !~ '^[^@]+@[^@]+$' THEN 'malformed address (expected local@domain)'
        WHEN octet_length(split_part(addr, '@', 1)) > 64 THEN 'local part longer than 64 characters'
        WHEN addr !~ ('^[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+)*@'
                     '([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$')
            THEN 'malformed address (expected local@domain)'
        ELSE NULL
    END
$fn$;
COMMENT ON FUNCTION outbox.addr_spec_problem(text) IS
    'NULL if the text is an acceptable bare address (local@domain), else the reason it is refused';

-- Like addr_spec_problem, but also accepts the mailbox form `Display Name <local@domain>`
-- (the display name may be "quoted"; it may not contain control characters, < or >).
-- dispatcher/address.c (address_mailbox_parse) applies the same checks in the same order.
CREATE OR REPLACE FUNCTION outbox.mailbox_problem(mailbox text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT CASE
        WHEN mailbox IS NULL THEN 'NULL address'
        WHEN mailbox ~ '[\r\n]' THEN 'contains CR or LF'
        WHEN position('<' IN mailbox) = 0 AND position('>' IN mailbox) = 0
            THEN outbox.addr_spec_problem(mailbox)
        WHEN mailbox !~ '^[^<>]*<[^<>]*>[ \t]*$' THEN 'malformed address (expected local@domain or Name <local@domain>)'
        WHEN substring(mailbox FROM '^([^<>]*)<') ~ '[\x01-\x08\x0b-\x1f\x7f]'
            THEN 'control character in display name'
        WHEN btrim(substring(mailbox FROM '^([^<>]*)<'), E' \t') ~ '"'
             AND btrim(substring(mailbox FROM '^([^<>]*)<'), E' \t') !~ '^"[^"\\]*"$'
            THEN 'malformed quoted display name'
        ELSE outbox.addr_spec_problem(substring(mailbox FROM '<([^<>]*)>'))
    END
$fn$;
COMMENT ON FUNCTION outbox.mailbox_problem(text) IS
    'NULL if the text is local@domain or Display Name <local@domain>, else the reason it is refused';

-- The bare address of a mailbox: the text inside <...>, or the whole text.
CREATE OR REPLACE FUNCTION outbox.mailbox_address(mailbox text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT coalesce(substring(mailbox FROM '<([^<>]*)>'), btrim(mailbox))
$fn$;
COMMENT ON FUNCTION outbox.mailbox_address(text) IS
    'The address part of a sender/reply_to value: inside <...> when present, else the whole value';

-- Raises for the first bad element of an address array; returns the array with exact
-- duplicates removed (first occurrence kept) and without the addresses listed in p_seen.
CREATE OR REPLACE FUNCTION outbox.check_address_list(p_field text, p_list text[], p_seen text[])
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
AS $fn$
DECLARE
    i       integer;
    problem text;
    result  text[] := '{}';
BEGIN
    IF array_ndims(p_list) > 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = format('outbox.messages.%s: must be a one-dimensional array', p_field);
    END IF;
    -- the producer's own subscripts ('[0:1]={...}' starts at 0): the message names the
    -- element as it was written, and the stored array starts at 1 (result)
    FOR i IN coalesce(array_lower(p_list, 1), 1) .. coalesce(array_upper(p_list, 1), 0) LOOP
        problem := outbox.addr_spec_problem(p_list[i]);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = format('outbox.messages.%s[%s]: %s', p_field, i, problem);
        END IF;
        IF NOT (p_list[i] = ANY (result) OR p_list[i] = ANY (p_seen)) THEN
            result := result || p_list[i];
        END IF;
    END LOOP;
    RETURN result;
END
$fn$;
COMMENT ON FUNCTION outbox.check_address_list(text, text[], text[]) IS
    'Validates an address array (raises 23514 naming field[index]); returns it deduplicated, minus p_seen';

-- Raises unless p_headers is a JSON object of string values whose names are RFC 5322 field
-- names that outboxd does not write itself and whose values carry no line breaks.
CREATE OR REPLACE FUNCTION outbox.check_headers(p_table text, p_headers jsonb, p_reserved text[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $fn$
DECLARE
    h record;
BEGIN
    IF jsonb_typeof(p_headers) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = format('outbox.%s.headers: must be a JSON object of strings', p_table);
    END IF;
    FOR h IN SELECT e.key, e.value FROM jsonb_each(p_headers) AS e LOOP
        IF h.key !~ '^[!-9;-~]{1,76}$' THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = format('outbox.%s.headers: invalid header name %s (printable ASCII without colon or space, 1-76 characters)',
                                 p_table, to_json(h.key));
        END IF;
        IF lower(h.key) = ANY (p_reserved) THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = format('outbox.%s.headers: header %s is set by outboxd', p_table, to_json(h.key));
        END IF;
        IF jsonb_typeof(h.value) <> 'string' THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = format('outbox.%s.headers: value of %s must be a string', p_table, to_json(h.key));
        END IF;
        IF (h.value #>> '{}') ~ '[\r\n]' THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = format('outbox.%s.headers: value of %s contains CR or LF', p_table, to_json(h.key));
        END IF;
        -- a mail header carries no other control character either (a tab is a blank)
        IF p_table = 'messages' AND (h.value #>> '{}') ~ '[\x01-\x08\x0b-\x1f\x7f]' THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = format('outbox.%s.headers: value of %s contains a control character', p_table, to_json(h.key));
        END IF;
        -- what the dispatcher would fail later: a value it cannot fold into 998-octet
        -- lines (mime.c: name + ": " + longest word with the blanks before it, which
        -- folding moves along), or one too large for a header at all
        IF octet_length(h.value #>> '{}') > 16384 THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = format('outbox.%s.headers: value of %s is longer than 16384 bytes', p_table, to_json(h.key));
        END IF;
        IF (h.value #>> '{}') ~ '^[\x01-\x7f]*$' AND octet_length(h.key) + 2 +
           coalesce((SELECT max(octet_length(w[1])) FROM regexp_matches(h.value #>> '{}', '([ \t]*[^ \t]*)', 'g') AS w), 0) > 998 THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = format('outbox.%s.headers: value of %s has a word too long to fold into a 998-octet line', p_table, to_json(h.key));
        END IF;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION outbox.check_headers(text, jsonb, text[]) IS
    'Raises 23514 unless the jsonb is an object of single-line strings with valid, unreserved names';

-- BEFORE INSERT / UPDATE OF producer columns on outbox.messages.
CREATE OR REPLACE FUNCTION outbox.messages_before_write()
RETURNS trigger
LANGUAGE plpgsql
AS $fn$
DECLARE
    n_rcpt integer;
    domain text;
BEGIN
    -- Partitioned layout: retention moving a row to a newer partition re-inserts it whole
    -- (producers cannot set message_id, so they cannot take this path).
    IF TG_OP = 'INSERT' AND NEW.message_id IS NOT NULL AND current_setting('outbox.moving', true) = 'on' THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.message_id IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'generated_always',
                MESSAGE = 'outbox.messages.message_id: set by outboxd at insert; producers may not set it';
        END IF;
    ELSIF NEW.message_id IS DISTINCT FROM OLD.message_id THEN
        RAISE EXCEPTION USING ERRCODE = 'generated_always',
            MESSAGE = 'outbox.messages.message_id: fixed at insert and may not change';
    END IF;

    IF NEW.recipients IS NULL OR cardinality(NEW.recipients) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.messages.recipients: at least one recipient is required';
    END IF;
    -- NULL cc/bcc/headers/subject mean "none", as producers often bind NULL for absent values.
    NEW.cc := coalesce(NEW.cc, '{}');
    NEW.bcc := coalesce(NEW.bcc, '{}');
    NEW.headers := coalesce(NEW.headers, '{}');
    NEW.subject := coalesce(NEW.subject, '');

    n_rcpt := cardinality(NEW.recipients) + cardinality(NEW.cc) + cardinality(NEW.bcc);
    IF n_rcpt > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = format('outbox.messages.recipients: %s recipients in recipients, cc and bcc together (at most 1000)', n_rcpt);
    END IF;
    -- Fast path for the common single recipient; duplicates across to/cc/bcc are dropped so
    -- that nobody receives the same message twice.
    IF n_rcpt = 1 AND array_ndims(NEW.recipients) = 1 THEN
        IF outbox.addr_spec_problem(NEW.recipients[1]) IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = format('outbox.messages.recipients[1]: %s', outbox.addr_spec_problem(NEW.recipients[1]));
        END IF;
    ELSE
        NEW.recipients := outbox.check_address_list('recipients', NEW.recipients, '{}');
        NEW.cc := outbox.check_address_list('cc', NEW.cc, NEW.recipients);
        NEW.bcc := outbox.check_address_list('bcc', NEW.bcc, NEW.recipients || NEW.cc);
    END IF;
    IF NEW.sender IS NOT NULL AND outbox.mailbox_problem(NEW.sender) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = format('outbox.messages.sender: %s', outbox.mailbox_problem(NEW.sender));
    END IF;
    IF NEW.reply_to IS NOT NULL AND outbox.mailbox_problem(NEW.reply_to) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = format('outbox.messages.reply_to: %s', outbox.mailbox_problem(NEW.reply_to));
    END IF;

    IF NEW.subject ~ '[\r\n]' THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.messages.subject: contains CR or LF';
    END IF;
    IF NEW.subject ~ '[\x01-\x08\x0b-\x1f\x7f]' THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.messages.subject: contains a control character';
    END IF;
    IF NEW.headers <> '{}' THEN
        PERFORM outbox.check_headers('messages', NEW.headers,
            ARRAY['message-id', 'date', 'from', 'to', 'cc', 'bcc', 'reply-to', 'subject',
                  'mime-version', 'content-type', 'content-transfer-encoding']);
    END IF;

    IF NEW.body_text IS NULL AND NEW.body_html IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.messages.body_text: body_text or body_html is required';
    END IF;
    IF coalesce(octet_length(NEW.body_text), 0) + coalesce(octet_length(NEW.body_html), 0) > 10485760 THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.messages.body_text: body_text and body_html together exceed 10485760 bytes';
    END IF;
    -- the unique index takes keys up to ~2.7 kB and would fail longer ones with 54000
    IF octet_length(NEW.idempotency_key) > 255 THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.messages.idempotency_key: longer than 255 bytes';
    END IF;
    IF NEW.max_attempts IS NULL OR NEW.max_attempts NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.messages.max_attempts: must be between 1 and 1000';
    END IF;
    IF NEW.priority IS NULL THEN
        NEW.priority := 0;
    END IF;

    IF TG_OP = 'INSERT' THEN
        IF NEW.sender IS NOT NULL THEN
            domain := lower(split_part(outbox.mailbox_address(NEW.sender), '@', 2));
        ELSE
            SELECT s.message_id_domain INTO domain FROM outbox.settings s;
        END IF;
        NEW.message_id := '<' || gen_random_uuid()::text || '@' || coalesce(domain, 'outboxd.invalid') || '>';
        IF NEW.next_attempt_at IS NULL THEN
            NEW.next_attempt_at := coalesce(NEW.not_before, now());
        END IF;
    END IF;
    RETURN NEW;
END
$fn$;
COMMENT ON FUNCTION outbox.messages_before_write() IS
    'Trigger: validates producer columns of outbox.messages, fixes message_id and next_attempt_at at insert';

-- Triggers are created only when missing: re-creating one locks the table against producers,
-- and this file runs on every migrate. Changing a trigger's definition takes a migration.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                    WHERE tgrelid = 'outbox.messages'::regclass AND tgname = 'messages_before_insert') THEN
        CREATE TRIGGER messages_before_insert
            BEFORE INSERT ON outbox.messages
            FOR EACH ROW EXECUTE FUNCTION outbox.messages_before_write();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                    WHERE tgrelid = 'outbox.messages'::regclass AND tgname = 'messages_before_update') THEN
        CREATE TRIGGER messages_before_update
            BEFORE UPDATE OF message_id, sender, recipients, cc, bcc, reply_to, subject, body_text, body_html,
                             headers, max_attempts, priority
            ON outbox.messages
            FOR EACH ROW EXECUTE FUNCTION outbox.messages_before_write();
    END IF;
END
$$;

-- BEFORE INSERT / UPDATE OF producer columns on outbox.events.
CREATE OR REPLACE FUNCTION outbox.events_before_write()
RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF NEW.aggregate_type IS NULL OR NEW.aggregate_type = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.events.aggregate_type: required and non-empty';
    END IF;
    IF NEW.aggregate_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.events.aggregate_id: required';
    END IF;
    IF NEW.type IS NULL OR NEW.type = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.events.type: required and non-empty';
    END IF;
    IF NEW.type ~ '[\r\n]' OR NEW.aggregate_type ~ '[\r\n]' THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.events.type: type and aggregate_type may not contain CR or LF';
    END IF;
    -- outboxd writes its own lifecycle events (message_id set, a column producers cannot
    -- insert); a producer's email.* event would pass for one
    IF NEW.message_id IS NULL AND NEW.type LIKE 'email.%' THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.events.type: email.* is reserved for outboxd''s own lifecycle events';
    END IF;
    IF NEW.payload IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.events.payload: required (use ''null''::jsonb for an empty payload)';
    END IF;
    IF pg_column_size(NEW.payload) > 1000000 THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.events.payload: larger than 1000000 bytes (Kafka''s default message limit)';
    END IF;
    IF NEW.topic IS NOT NULL AND NEW.topic !~ '^[A-Za-z0-9._-]{1,249}$' THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.events.topic: not a valid Kafka topic name ([A-Za-z0-9._-], 1-249 characters)';
    END IF;
    IF NEW.topic LIKE '\_\_%' THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'outbox.events.topic: names starting with "__" are Kafka''s internal topics (__consumer_offsets, __transaction_state)';
    END IF;
    NEW.headers := coalesce(NEW.headers, '{}');
    IF NEW.headers <> '{}' THEN
        PERFORM outbox.check_headers('events', NEW.headers, ARRAY['id']);
    END IF;
    RETURN NEW;
END
$fn$;
COMMENT ON FUNCTION outbox.events_before_write() IS
    'Trigger: validates producer columns of outbox.events';

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                    WHERE tgrelid = 'outbox.events'::regclass AND tgname = 'events_before_insert') THEN
        CREATE TRIGGER events_before_insert
            BEFORE INSERT ON outbox.events
            FOR EACH ROW EXECUTE FUNCTION outbox.events_before_write();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                    WHERE tgrelid = 'outbox.events'::regclass AND tgname = 'events_before_update') THEN
        CREATE TRIGGER events_before_update
            BEFORE UPDATE OF aggregate_type, aggregate_id, type, payload, topic, headers ON outbox.events
            FOR EACH ROW EXECUTE FUNCTION outbox.events_before_write();
    END IF;
END
$$;
