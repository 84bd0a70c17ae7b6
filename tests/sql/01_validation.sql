-- Bad producer rows are refused at INSERT (and UPDATE of producer columns) with SQLSTATE 23514
-- and a message naming the field; good ones in every accepted form go in.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(88);

-- Address syntax (the function behind every address check).
SELECT is(outbox.addr_spec_problem(a), NULL, 'accepted address: ' || a)
  FROM unnest(ARRAY['a@example.com', 'first.last+tag@sub.example.co.uk', 'x_y-z@a-b.io', 'A@EXAMPLE.COM',
                    'o''brien@example.ie', 'a@xn--bcher-kva.example']) AS a;
SELECT is(outbox.addr_spec_problem(a), 'malformed address (expected local@domain)', 'refused address: ' || a)
  FROM unnest(ARRAY['plain', 'a@localhost', 'a b@example.com', '<a@example.com>', 'a@@example.com',
                    '.a@example.com', 'a..b@example.com', 'a@-example.com', 'a@example..com',
                    '"q"@example.com', 'a@exa_mple.com']) AS a;
SELECT is(outbox.mailbox_problem(a), NULL, 'accepted mailbox: ' || a)
  FROM unnest(ARRAY['Acme <noreply@acme.com>', '"Doe, John" <j@example.org>', '<bare@example.org>',
                    'Zoë Ünïcode <z@example.org>', 'j@example.org']) AS a;

-- recipients
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (NULL, 's', 'b')$$,
    '23514', 'outbox.messages.recipients: at least one recipient is required', 'recipients NULL');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, subject, body_text) VALUES ('{}', 's', 'b')$$,
    '23514', 'outbox.messages.recipients: at least one recipient is required', 'recipients empty');
SELECT throws_ok($$INSERT INTO outbox.messages (body_text) VALUES ('b')$$,
    '23514', 'outbox.messages.recipients: at least one recipient is required', 'recipients omitted');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY[NULL]::text[], 'b')$$,
    '23514', 'outbox.messages.recipients[1]: NULL address', 'recipients NULL element');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY['a@example.com', NULL], 'b')$$,
    '23514', 'outbox.messages.recipients[2]: NULL address', 'recipients NULL second element');
-- arrays whose subscripts do not start at 1 are read whole, by their own subscripts
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES ('[0:1]={a@example.com,nobody}'::text[], 'b')$$,
    '23514', 'outbox.messages.recipients[1]: malformed address (expected local@domain)', 'a [0:1] array: the bad element by its subscript');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES ('[5:6]={a@example.com,b@example}'::text[], 'b')$$,
    '23514', 'outbox.messages.recipients[6]: malformed address (expected local@domain)', 'a [5:6] array: the bad element by its subscript');
WITH x AS (INSERT INTO outbox.messages (recipients, body_text)
            VALUES ('[0:1]={a@example.com,b@example.com}'::text[], 'b') RETURNING recipients)
SELECT is(x.recipients, '{a@example.com,b@example.com}'::text[], 'a [0:1] array is stored whole, from subscript 1') FROM x;
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY['nobody'], 'b')$$,
    '23514', 'outbox.messages.recipients[1]: malformed address (expected local@domain)', 'recipients malformed');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY['a@example.com', 'x y@example.com'], 'b')$$,
    '23514', 'outbox.messages.recipients[2]: malformed address (expected local@domain)', 'recipients malformed second');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY[E'a@example.com\r\nBcc: v@example.net'], 'b')$$,
    '23514', 'outbox.messages.recipients[1]: contains CR or LF', 'recipients header injection');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY[''], 'b')$$,
    '23514', 'outbox.messages.recipients[1]: empty address', 'recipients empty string');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY[repeat('a', 250) || '@example.com'], 'b')$$,
    '23514', 'outbox.messages.recipients[1]: address longer than 254 characters', 'recipients too long');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY['user@[192.0.2.1]'], 'b')$$,
    '23514', 'outbox.messages.recipients[1]: address literal (user@[...]) not accepted: use a domain name',
    'recipients address literal (the dispatcher cannot send it)');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY[repeat('l', 65) || '@example.com'], 'b')$$,
    '23514', 'outbox.messages.recipients[1]: local part longer than 64 characters', 'recipients local part too long');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY[['a@example.com'], ['b@example.com']], 'b')$$,
    '23514', 'outbox.messages.recipients: must be a one-dimensional array', 'recipients two-dimensional');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text)
                   SELECT array_agg('u' || g || '@example.com'), 'b' FROM generate_series(1, 1001) g$$,
    '23514', 'outbox.messages.recipients: 1001 recipients in recipients, cc and bcc together (at most 1000)',
    'more than 1000 recipients');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, cc, bcc, body_text)
                   SELECT array_agg('u' || g || '@example.com'), ARRAY['c@example.com'], ARRAY['d@example.com'], 'b'
                     FROM generate_series(1, 999) g$$,
    '23514', 'outbox.messages.recipients: 1001 recipients in recipients, cc and bcc together (at most 1000)',
    'more than 1000 recipients counting cc and bcc');
SELECT lives_ok($$INSERT INTO outbox.messages (recipients, body_text)
                  SELECT array_agg('u' || g || '@example.com'), 'b' FROM generate_series(1, 1000) g$$,
    '1000 recipients are accepted');

-- cc, bcc
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, cc, body_text) VALUES (ARRAY['a@example.com'], ARRAY['bad'], 'b')$$,
    '23514', 'outbox.messages.cc[1]: malformed address (expected local@domain)', 'cc malformed');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, cc, body_text) VALUES (ARRAY['a@example.com'], ARRAY['c@example.com', NULL], 'b')$$,
    '23514', 'outbox.messages.cc[2]: NULL address', 'cc NULL element');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, bcc, body_text) VALUES (ARRAY['a@example.com'], ARRAY[E'b@example.com\n'], 'b')$$,
    '23514', 'outbox.messages.bcc[1]: contains CR or LF', 'bcc header injection');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, bcc, body_text) VALUES (ARRAY['a@example.com'], ARRAY['Name <b@example.com>'], 'b')$$,
    '23514', 'outbox.messages.bcc[1]: malformed address (expected local@domain)', 'bcc display names are refused');

-- sender, reply_to
SELECT throws_ok($$INSERT INTO outbox.messages (sender, recipients, body_text) VALUES ('nobody', ARRAY['a@example.com'], 'b')$$,
    '23514', 'outbox.messages.sender: malformed address (expected local@domain)', 'sender malformed');
SELECT throws_ok($$INSERT INTO outbox.messages (sender, recipients, body_text) VALUES ('Acme <nobody>', ARRAY['a@example.com'], 'b')$$,
    '23514', 'outbox.messages.sender: malformed address (expected local@domain)', 'sender display form with bad address');
SELECT throws_ok($$INSERT INTO outbox.messages (sender, recipients, body_text) VALUES (E'Acme <n@acme.com>\r\nBcc: v@example.net', ARRAY['a@example.com'], 'b')$$,
    '23514', 'outbox.messages.sender: contains CR or LF', 'sender header injection');
SELECT throws_ok($$INSERT INTO outbox.messages (sender, recipients, body_text) VALUES ('Acme <n@[192.0.2.1]>', ARRAY['a@example.com'], 'b')$$,
    '23514', 'outbox.messages.sender: address literal (user@[...]) not accepted: use a domain name', 'sender address literal');
SELECT throws_ok($$INSERT INTO outbox.messages (sender, recipients, body_text) VALUES ('A <b> <n@acme.com>', ARRAY['a@example.com'], 'b')$$,
    '23514', 'outbox.messages.sender: malformed address (expected local@domain or Name <local@domain>)', 'sender with two angle pairs');
SELECT throws_ok($$INSERT INTO outbox.messages (reply_to, recipients, body_text) VALUES ('a@@example.com', ARRAY['a@example.com'], 'b')$$,
    '23514', 'outbox.messages.reply_to: malformed address (expected local@domain)', 'reply_to malformed');
SELECT throws_ok($$INSERT INTO outbox.messages (reply_to, recipients, body_text) VALUES ('"Unclosed <r@example.com>', ARRAY['a@example.com'], 'b')$$,
    '23514', 'outbox.messages.reply_to: malformed quoted display name', 'reply_to bad quoted name');
SELECT throws_ok($$INSERT INTO outbox.messages (reply_to, recipients, body_text) VALUES (E'Bad\tName\x01 <r@example.com>', ARRAY['a@example.com'], 'b')$$,
    '23514', 'outbox.messages.reply_to: control character in display name', 'reply_to control character');

-- subject
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], E'Hi\r\nBcc: v@example.net', 'b')$$,
    '23514', 'outbox.messages.subject: contains CR or LF', 'subject CRLF');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], E'Hi\nthere', 'b')$$,
    '23514', 'outbox.messages.subject: contains CR or LF', 'subject LF');
-- the dispatcher cannot send any other control character either (a tab is a blank)
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], E'Ring\x07', 'b')$$,
    '23514', 'outbox.messages.subject: contains a control character', 'subject BEL');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], E'Del\x7f', 'b')$$,
    '23514', 'outbox.messages.subject: contains a control character', 'subject DEL');
SELECT lives_ok($$INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], E'Tab\tbed', 'b')$$,
    'subject with a tab');

-- headers
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, headers) VALUES (ARRAY['a@example.com'], 'b', '["X-A"]')$$,
    '23514', 'outbox.messages.headers: must be a JSON object of strings', 'headers not an object');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, headers) VALUES (ARRAY['a@example.com'], 'b', '{"X-A": 1}')$$,
    '23514', 'outbox.messages.headers: value of "X-A" must be a string', 'header value not a string');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, headers) VALUES (ARRAY['a@example.com'], 'b', '{"X-A": null}')$$,
    '23514', 'outbox.messages.headers: value of "X-A" must be a string', 'header value null');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, headers) VALUES (ARRAY['a@example.com'], 'b', '{"X-A": "v\r\nBcc: v@example.net"}')$$,
    '23514', 'outbox.messages.headers: value of "X-A" contains CR or LF', 'header value injection');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, headers) VALUES (ARRAY['a@example.com'], 'b', '{"X-A": "v\u0001w"}')$$,
    '23514', 'outbox.messages.headers: value of "X-A" contains a control character', 'header value control character');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, headers) VALUES (ARRAY['a@example.com'], 'b', '{"X-A:": "v"}')$$,
    '23514', 'outbox.messages.headers: invalid header name "X-A:" (printable ASCII without colon or space, 1-76 characters)',
    'header name with colon');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, headers) VALUES (ARRAY['a@example.com'], 'b', '{"X A": "v"}')$$,
    '23514', 'outbox.messages.headers: invalid header name "X A" (printable ASCII without colon or space, 1-76 characters)',
    'header name with space');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, headers) VALUES (ARRAY['a@example.com'], 'b', '{"X-A\nBcc": "v"}')$$,
    '23514', 'outbox.messages.headers: invalid header name "X-A\nBcc" (printable ASCII without colon or space, 1-76 characters)',
    'header name with LF');
SELECT throws_ok(format($$INSERT INTO outbox.messages (recipients, body_text, headers) VALUES (ARRAY['a@example.com'], 'b', %L)$$,
                        jsonb_build_object(h, 'v')),
    '23514', format('outbox.messages.headers: header %s is set by outboxd', to_json(h)), 'reserved header ' || h)
  FROM unnest(ARRAY['Message-ID', 'date', 'FROM', 'To', 'cc', 'BCC', 'Reply-To', 'Subject', 'MIME-Version',
                    'content-type', 'Content-Transfer-Encoding']) AS h;

-- bodies
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, subject) VALUES (ARRAY['a@example.com'], 's')$$,
    '23514', 'outbox.messages.body_text: body_text or body_html is required', 'no body');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY['a@example.com'], repeat('x', 10485761))$$,
    '23514', 'outbox.messages.body_text: body_text and body_html together exceed 10485760 bytes', 'text body over the cap');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, body_html) VALUES (ARRAY['a@example.com'], repeat('x', 6000000), repeat('y', 5000000))$$,
    '23514', 'outbox.messages.body_text: body_text and body_html together exceed 10485760 bytes', 'text + html over the cap');
SELECT lives_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY['a@example.com'], repeat('x', 10485760))$$,
    'a body of exactly the cap is accepted');

-- max_attempts, state, message_id
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, max_attempts) VALUES (ARRAY['a@example.com'], 'b', 0)$$,
    '23514', 'outbox.messages.max_attempts: must be between 1 and 1000', 'max_attempts 0');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, max_attempts) VALUES (ARRAY['a@example.com'], 'b', 1001)$$,
    '23514', 'outbox.messages.max_attempts: must be between 1 and 1000', 'max_attempts 1001');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, state) VALUES (ARRAY['a@example.com'], 'b', 'queued')$$,
    '23514', 'new row for relation "messages" violates check constraint "messages_state_valid"', 'unknown state');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, message_id) VALUES (ARRAY['a@example.com'], 'b', '<x@y.z>')$$,
    '428C9', 'outbox.messages.message_id: set by outboxd at insert; producers may not set it', 'message_id is not settable');

-- UPDATE of producer columns is validated too; message_id never changes.
INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
VALUES (ARRAY['a@example.com'], 'Hi', 'Hello', 'validation-update');
SELECT throws_ok($$UPDATE outbox.messages SET recipients = ARRAY['bad'] WHERE idempotency_key = 'validation-update'$$,
    '23514', 'outbox.messages.recipients[1]: malformed address (expected local@domain)', 'UPDATE recipients validated');
SELECT throws_ok($$UPDATE outbox.messages SET subject = E'a\rb' WHERE idempotency_key = 'validation-update'$$,
    '23514', 'outbox.messages.subject: contains CR or LF', 'UPDATE subject validated');
SELECT throws_ok($$UPDATE outbox.messages SET message_id = '<x@y.z>' WHERE idempotency_key = 'validation-update'$$,
    '428C9', 'outbox.messages.message_id: fixed at insert and may not change', 'UPDATE message_id refused');

SELECT * FROM finish();
ROLLBACK;
