-- The address grammar, case by case from tests/data/addresses.tsv, the table the C side
-- (tests/unit/test_address.c) reads too: each input is judged as a bare address (recipients,
-- cc, bcc) and as a mailbox (sender, reply_to), by the functions and by an INSERT, which
-- refuses a bad one with 23514 naming the column. \copy reads the table relative to the
-- working directory: run pg_prove from the repository root (as make test does).
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE TEMP TABLE address_cases (input text NOT NULL, address text NOT NULL, mailbox text NOT NULL, note text NOT NULL);
\copy address_cases FROM 'tests/data/addresses.tsv' WITH (FORMAT text, HEADER true)
SELECT plan(2 + 4 * (SELECT count(*)::integer FROM address_cases));

SELECT cmp_ok((SELECT count(*)::integer FROM address_cases), '>=', 40, 'the table of address cases is loaded');
SELECT is((SELECT count(*)::integer FROM address_cases
            WHERE address NOT IN ('valid', 'invalid') OR mailbox NOT IN ('valid', 'invalid')), 0,
          'every case says valid or invalid');

SELECT is(outbox.addr_spec_problem(input) IS NULL, address = 'valid',
          format('as an address, %s is %s (%s)', to_json(input), address, note))
  FROM address_cases;
SELECT is(outbox.mailbox_problem(input) IS NULL, mailbox = 'valid',
          format('as a mailbox, %s is %s (%s)', to_json(input), mailbox, note))
  FROM address_cases;

SELECT CASE WHEN address = 'valid' THEN
           lives_ok(format($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY[%L], 'b')$$, input),
                    format('INSERT takes recipient %s (%s)', to_json(input), note))
       ELSE
           throws_ok(format($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY[%L], 'b')$$, input),
                     '23514', 'outbox.messages.recipients[1]: ' || coalesce(outbox.addr_spec_problem(input), '(accepted)'),
                     format('INSERT refuses recipient %s (%s)', to_json(input), note))
       END
  FROM address_cases;
SELECT CASE WHEN mailbox = 'valid' THEN
           lives_ok(format($$INSERT INTO outbox.messages (sender, recipients, body_text) VALUES (%L, ARRAY['a@example.com'], 'b')$$, input),
                    format('INSERT takes sender %s (%s)', to_json(input), note))
       ELSE
           throws_ok(format($$INSERT INTO outbox.messages (sender, recipients, body_text) VALUES (%L, ARRAY['a@example.com'], 'b')$$, input),
                     '23514', 'outbox.messages.sender: ' || coalesce(outbox.mailbox_problem(input), '(accepted)'),
                     format('INSERT refuses sender %s (%s)', to_json(input), note))
       END
  FROM address_cases;

SELECT * FROM finish();
ROLLBACK;
