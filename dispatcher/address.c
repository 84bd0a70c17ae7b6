/* address: the addr-spec and mailbox grammar (address.h). The checks run in the order of
 * outbox.addr_spec_problem() and outbox.mailbox_problem() in sql/01_validate.sql, so both
 * refuse the same inputs for the same reason; tests/data/addresses.tsv keeps them honest. */
#include <string.h>

#include "address.h"

static const char R_CRLF[] = "contains CR or LF";
static const char R_MALFORMED[] = "malformed address (expected local@domain)";

static int is_atext(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static int is_let_dig(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* 1 if s[0..n) is a dot-atom: atext runs joined by single dots. */
static int dot_atom_ok(const char *s, size_t n)
{
	size_t run = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (run == 0)
				return 0;
			run = 0;
		} else if (is_atext((unsigned char)s[i])) {
			run++;
		} else {
			return 0;
		}
	}
	return run > 0;
}

/* 1 if s[0..n) is two or more LDH labels of 1-63 octets (no hyphen first or last), the
 * last starting with a letter: a host name, never an IP address. */
static int domain_ok(const char *s, size_t n)
{
	size_t start = 0, labels = 0;

	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != '.') {
			if (!is_let_dig((unsigned char)s[i]) && s[i] != '-')
				return 0;
			continue;
		}
		if (i == start || i - start > 63 || s[start] == '-' || s[i - 1] == '-')
			return 0;
		labels++;
		if (i == n) {
			unsigned char first = (unsigned char)s[start];
			return labels >= 2 && ((first >= 'A' && first <= 'Z') || (first >= 'a' && first <= 'z'));
		}
		start = i + 1;
	}
	return 0;
}

const char *address_spec_problem(const char *s, size_t n)
{
	const char *at = NULL;
	size_t i;

	if (s == NULL)
		return "NULL address";
	if (memchr(s, '\r', n) || memchr(s, '\n', n))
		return R_CRLF;
	if (n == 0)
		return "empty address";
	if (n > ADDRESS_MAX)
		return "address longer than 254 characters";
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return "non-ASCII address (give an internationalised domain as xn-- A-labels)";
	for (i = 0; i + 1 < n; i++)
		if (s[i] == '@' && s[i + 1] == '[')
			return "address literal (user@[...]) not accepted: use a domain name";
	for (i = 0; i < n; i++) {
		if (s[i] != '@')
			continue;
		if (at != NULL)
			return R_MALFORMED;
		at = s + i;
	}
	if (at == NULL || at == s || at + 1 == s + n)
		return R_MALFORMED;
	if ((size_t)(at - s) > ADDRESS_LOCAL_MAX)
		return "local part longer than 64 characters";
	if (!dot_atom_ok(s, (size_t)(at - s)) || !domain_ok(at + 1, (size_t)(s + n - at - 1)))
		return R_MALFORMED;
	return NULL;
}

static size_t count_char(const char *s, char c)
{
	size_t k = 0;

	for (; *s; s++)
		k += *s == c;
	return k;
}

const char *address_mailbox_parse(const char *s, struct address_mailbox *mb)
{
	const char *lt, *gt, *name, *end;

	if (s == NULL)
		return "NULL address";
	if (strpbrk(s, "\r\n"))
		return R_CRLF;
	lt = strchr(s, '<');
	gt = strchr(s, '>');
	if (lt == NULL && gt == NULL) {
		mb->name = s;
		mb->name_len = 0;
		mb->addr = s;
		mb->addr_len = strlen(s);
		return address_spec_problem(s, mb->addr_len);
	}
	if (lt == NULL || gt == NULL || gt < lt || count_char(s, '<') != 1 || count_char(s, '>') != 1 ||
	    gt[1 + strspn(gt + 1, " \t")] != '\0')
		return "malformed address (expected local@domain or Name <local@domain>)";
	for (name = s; name < lt; name++)
		if (((unsigned char)*name < 0x20 && *name != '\t') || *name == 0x7F)
			return "control character in display name";
	name = s + strspn(s, " \t");
	end = lt;
	while (end > name && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (memchr(name, '"', (size_t)(end - name)) &&
	    (end - name < 2 || name[0] != '"' || end[-1] != '"' || memchr(name + 1, '"', (size_t)(end - name - 2)) ||
	     memchr(name + 1, '\\', (size_t)(end - name - 2))))
		return "malformed quoted display name";
	mb->name = name;
	mb->name_len = (size_t)(end - name);
	mb->addr = lt + 1;
	mb->addr_len = (size_t)(gt - lt - 1);
	return address_spec_problem(mb->addr, mb->addr_len);
}
