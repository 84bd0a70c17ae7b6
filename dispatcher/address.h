/* address: the one grammar for email addresses, as a bare addr-spec (local@domain) and as a
 * mailbox ("addr" or "Display Name <addr>"). The builder, the envelope sender and the
 * smtp.from check use it; sql/01_validate.sql implements the same rules at INSERT, and
 * tests/data/addresses.tsv holds the cases both follow (docs/sql.md, "Addresses"). */
#ifndef OUTBOXD_ADDRESS_H
#define OUTBOXD_ADDRESS_H

#include <stddef.h>

#define ADDRESS_MAX 254      /* octets in a whole address */
#define ADDRESS_LOCAL_MAX 64 /* octets before the @ */

/* NULL if s[0..n) is an acceptable addr-spec, else the reason it is refused (a static
 * string, the same text outbox.addr_spec_problem() gives): an ASCII dot-atom local part of
 * at most 64 octets, '@', two or more LDH labels of at most 63 octets whose last starts with
 * a letter; at most 254 octets in all. No quoted local parts, no address literals. */
const char *address_spec_problem(const char *s, size_t n);

/* One mailbox split into its parts; both point into the string parsed. */
struct address_mailbox {
	const char *name; /* display name as written, blanks around it removed; name_len 0 = none */
	size_t name_len;  /* when quoted ("Doe, Ann"), the quotes are included and nothing inside is escaped */
	const char *addr; /* the addr-spec */
	size_t addr_len;
};

/* Parses s as "addr" or "Display Name <addr>" (spaces or tabs may follow the '>'). Returns
 * NULL with mb filled, or the reason it is refused (a static string, the same text
 * outbox.mailbox_problem() gives). The display name is any text without control characters
 * other than tab, '<' or '>'; when it contains '"' it must be wholly quoted, with no '"' or
 * '\' inside the quotes. */
const char *address_mailbox_parse(const char *s, struct address_mailbox *mb);

#endif
