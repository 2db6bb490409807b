package kopiarestore

import (
	"strings"
	"unicode/utf8"
)

// kopia keeps a snapshot's names in JSON, which holds only valid UTF-8: a name with
// other bytes (Latin-1 file names, binary garbage an application wrote) would come
// back with U+FFFD in place of each bad byte, under another name, possibly over a
// file that has that name. Holdfast stores such names encoded, reversibly:
//
//   - a name that is valid UTF-8 and does not begin with NamePrefix is stored as it is;
//   - any other name is stored as NamePrefix followed by the name with each byte
//     that is not part of valid UTF-8, and each '%', written as %XX (hex, upper case).
//
// So the encoded names are exactly those that begin with NamePrefix, and a name that
// merely looks like an encoded one is encoded itself: every byte sequence round-trips.
// The kopia CLI restores an encoded name as it is stored, "%hf%bad-%FF.txt"; a name
// whose encoding exceeds 255 bytes cannot be written by the CLI at all.

// NamePrefix begins every encoded name.
const NamePrefix = "%hf%"

// EncodeName is the name kopia stores for the file name name.
func EncodeName(name string) string {
	if utf8.ValidString(name) && !strings.HasPrefix(name, NamePrefix) {
		return name
	}
	var b strings.Builder
	b.WriteString(NamePrefix)
	for i := 0; i < len(name); {
		r, size := utf8.DecodeRuneInString(name[i:])
		switch {
		case r == utf8.RuneError && size <= 1, r == '%':
			const hex = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(hex[name[i]>>4])
			b.WriteByte(hex[name[i]&0xf])
		default:
			b.WriteString(name[i : i+size])
		}
		i += size
	}
	return b.String()
}

// DecodeName is the file name of the stored name stored. A stored name that begins
// with NamePrefix but is not a valid encoding of a file name (only a client other than
// Holdfast writes one: it may decode to "..", or hold a '/') is returned as it is.
func DecodeName(stored string) string {
	rest, ok := strings.CutPrefix(stored, NamePrefix)
	if !ok {
		return stored
	}
	var b strings.Builder
	for i := 0; i < len(rest); i++ {
		if rest[i] != '%' {
			b.WriteByte(rest[i])
			continue
		}
		if i+2 >= len(rest) {
			return stored
		}
		hi, ok1 := unhex(rest[i+1])
		lo, ok2 := unhex(rest[i+2])
		if !ok1 || !ok2 {
			return stored
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	name := b.String()
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return stored // never a name EncodeName stores: it would change the path
	}
	return name
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// DecodePath decodes each name of a slash-separated path of stored names.
func DecodePath(stored string) string {
	if !strings.Contains(stored, NamePrefix) {
		return stored
	}
	parts := strings.Split(stored, "/")
	for i, p := range parts {
		parts[i] = DecodeName(p)
	}
	return strings.Join(parts, "/")
}
