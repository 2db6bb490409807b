package repository

import (
	"os"
	"path/filepath"
	"testing"
)

// restic reads each exclude line as a pattern: every character of its syntax in a
// name is escaped, and '$' doubled, so that the pattern matches that name only.
func TestResticExcludesMatchNamesLiterally(t *testing.T) {
	for _, tc := range []struct{ dir, pattern string }{
		{"/volume/cache", "/volume/cache"},
		{"/volume/c*", `/volume/c\*`},
		{"/volume/a?b", `/volume/a\?b`},
		{"/volume/d[x]", `/volume/d\[x\]`},
		{`/volume/f\g`, `/volume/f\\g`},
		{"/volume/e$HOME", "/volume/e$$HOME"},
		{"/volume/ sp ace ", "/volume/ sp ace "},
		{"/volume/bad-\xff", "/volume/bad-\xff"},
	} {
		got := resticExcludes([]string{tc.dir})
		want := []string{tc.pattern + "/*", "!" + tc.pattern + "/CACHEDIR.TAG"}
		if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("resticExcludes(%q) = %q, want %q", tc.dir, got, want)
		}
	}
}

// A directory is a cache only with a regular CACHEDIR.TAG that begins with the whole
// signature; the walk finds none when the option is off, and none with a line break
// in its path.
func TestCacheDirectoryTags(t *testing.T) {
	root := t.TempDir()
	for name, content := range map[string]string{
		"exact":       cacheDirSignature,
		"more":        cacheDirSignature + "\n# comment\n",
		"short":       cacheDirSignature[:42],
		"wrong":       "signature: 8a477f597d28d172789f06886806bc55",
		"leading":     " " + cacheDirSignature,
		"empty":       "",
		"line\nbreak": cacheDirSignature,
	} {
		writeTree(t, root, map[string]string{filepath.Join(name, cacheDirTag): content})
	}
	if err := os.MkdirAll(filepath.Join(root, "dir", cacheDirTag), 0o755); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"exact": true, "more": true}
	caches := newCacheDirs(true)
	off := newCacheDirs(false)
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		p := filepath.Join(root, e.Name())
		if got := caches.visit(p); got != want[e.Name()] {
			t.Errorf("%q is a cache directory: %v, want %v", e.Name(), got, want[e.Name()])
		}
		if off.visit(p) {
			t.Errorf("%q found with the option off", e.Name())
		}
	}
	if caches.count() != 2 || !caches.has(filepath.Join(root, "exact")+"/") {
		t.Errorf("found %q", caches.list)
	}
}
