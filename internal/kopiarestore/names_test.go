package kopiarestore

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestNamesRoundTrip(t *testing.T) {
	names := []string{
		"plain.txt", "naïve-☃.txt", "bad-\xff\xfe.txt", "dir-\xc3\x28", "\xc3", "%", "100%", "%FF",
		NamePrefix, NamePrefix + "bad-%FF%FE.txt", NamePrefix + "%", NamePrefix + "x", "%hf", "bad-\uFFFD\uFFFD.txt",
		strings.Repeat("\xff", 255),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, 1+rng.IntN(12))
		for i := range b {
			b[i] = byte(1 + rng.IntN(255))
			if b[i] == '/' {
				b[i] = '%'
			}
		}
		names = append(names, string(b))
	}
	stored := map[string]string{}
	for _, n := range names {
		if n == "." || n == ".." {
			continue
		}
		e := EncodeName(n)
		if !utf8.ValidString(e) {
			t.Errorf("EncodeName(%q) = %q: not valid UTF-8", n, e)
		}
		if strings.Contains(e, "/") {
			t.Errorf("EncodeName(%q) = %q holds a '/'", n, e)
		}
		if d := DecodeName(e); d != n {
			t.Errorf("DecodeName(EncodeName(%q)) = %q", n, d)
		}
		if other, dup := stored[e]; dup && other != n {
			t.Errorf("%q and %q are both stored as %q", other, n, e)
		}
		stored[e] = n
		if utf8.ValidString(n) && !strings.HasPrefix(n, NamePrefix) && e != n {
			t.Errorf("EncodeName(%q) = %q: a plain name must be stored as it is", n, e)
		}
	}
}

// TestDecodeNameRefusesPathChanges: a stored name from another client that would
// decode to a path separator, "..", or NUL is taken as it is.
func TestDecodeNameRefusesPathChanges(t *testing.T) {
	for _, s := range []string{NamePrefix + "%2F", NamePrefix + "..", NamePrefix + "%2E%2E", NamePrefix + "a%00", NamePrefix + "%G1", NamePrefix + "%F"} {
		if d := DecodeName(s); d != s {
			t.Errorf("DecodeName(%q) = %q, want it unchanged", s, d)
		}
	}
	if d := DecodePath("a/" + EncodeName("b\xff") + "/c"); d != "a/b\xff/c" {
		t.Errorf("DecodePath = %q", d)
	}
}
