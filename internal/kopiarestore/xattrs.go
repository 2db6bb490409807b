package kopiarestore

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"sort"
	"strings"
)

// kopia has no field for extended attributes. Holdfast keeps a volume's attributes
// (user.*, trusted.*, security.capability, POSIX ACLs as system.posix_acl_*) in one
// extra file at the root of the snapshot, AttributesName, in the text format of
// `getfattr --dump` (relative paths, values base64). Holdfast's restore reads it,
// applies the attributes after the files are written and does not write the file
// itself. The kopia CLI restores it as a file; run
// `cd <restored volume> && setfattr --restore=%hf%xattrs` to apply it.
//
// The name begins with NamePrefix but is not an encoding EncodeName makes (that would
// be NamePrefix + "%25..."), so no file of a volume is ever stored under it.

// AttributesName is the stored name of the attributes file at a snapshot's root.
const AttributesName = NamePrefix + "xattrs"

// WriteAttributes appends the attributes attrs (name: raw value) of the entry at path
// (relative to the volume, raw bytes) to w in getfattr --dump form.
func WriteAttributes(w io.Writer, path string, attrs map[string][]byte) error {
	names := make([]string, 0, len(attrs))
	for n := range attrs {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("# file: ")
	b.WriteString(quote(path))
	b.WriteByte('\n')
	for _, n := range names {
		b.WriteString(quote(n))
		b.WriteString("=0s")
		b.WriteString(base64.StdEncoding.EncodeToString(attrs[n]))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

// ReadAttributes reads a file WriteAttributes wrote: attributes by entry path.
func ReadAttributes(r io.Reader) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	var current map[string]string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		switch {
		case text == "":
			continue
		case strings.HasPrefix(text, "# file: "):
			path, err := unquote(strings.TrimPrefix(text, "# file: "))
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", line, err)
			}
			current = map[string]string{}
			out[path] = current
			continue
		case strings.HasPrefix(text, "#"):
			continue
		}
		name, value, ok := strings.Cut(text, "=0s")
		if !ok || current == nil {
			return nil, fmt.Errorf("line %d: not an attribute of a file", line)
		}
		n, err := unquote(name)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		v, err := base64.StdEncoding.DecodeString(value)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		current[n] = string(v)
	}
	return out, sc.Err()
}

// quote writes every byte outside printable ASCII, and '\\' and '=', as \ooo, as
// getfattr does; setfattr --restore reads it back.
func quote(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '\\' || c == '=' {
			fmt.Fprintf(&b, "\\%03o", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func unquote(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+3 >= len(s) {
			return "", fmt.Errorf("%q: a truncated \\ooo escape", s)
		}
		var c int
		for _, d := range s[i+1 : i+4] {
			if d < '0' || d > '7' {
				return "", fmt.Errorf("%q: not a \\ooo escape", s)
			}
			c = c*8 + int(d-'0')
		}
		if c > 0xff {
			return "", fmt.Errorf("%q: not a \\ooo escape", s)
		}
		b.WriteByte(byte(c))
		i += 3
	}
	return b.String(), nil
}
