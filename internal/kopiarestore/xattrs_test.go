package kopiarestore

import (
	"bytes"
	"reflect"
	"testing"
)

// TestAttributesFileRoundTrip: paths and names with every awkward byte and binary
// values come back from the attributes file as they went in.
func TestAttributesFileRoundTrip(t *testing.T) {
	want := map[string]map[string]string{
		".":                      {"system.posix_acl_default": "\x02\x00\x00\x00\x01\x00\x07\x00\xff\xff\xff\xff"},
		"a name\nwith = and \\":  {"user.x": "", "user.bin": "\x00\x01\xff"},
		"bad-\xff\xfe/# file: x": {"user.\xff=": "v"},
	}
	var buf bytes.Buffer
	for p, a := range want {
		raw := map[string][]byte{}
		for k, v := range a {
			raw[k] = []byte(v)
		}
		if err := WriteAttributes(&buf, p, raw); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadAttributes(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back %q, want %q\n%s", got, want, buf.String())
	}
}
