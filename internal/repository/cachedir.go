package repository

import (
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Cache directories (BackupRequest.ExcludeCaches) follow the Cache Directory Tagging
// Specification as restic --exclude-caches reads it: a directory that holds a file
// named CACHEDIR.TAG whose content begins with the signature. Its other entries are
// left out; the directory itself and its tag are kept.
//
// Holdfast decides which directories are caches itself, once per backup, for both
// uploaders, in the walk that precedes the upload: kopia then reads through a wrapper
// that lists only the tag of each, and restic gets an exclude pattern for each. restic's
// own --exclude-caches is not used: restic 0.18 opens the tag without O_NONBLOCK, so a
// FIFO named CACHEDIR.TAG, which anyone who writes to the volume can make, blocks the
// backup for ever.
const (
	cacheDirTag       = "CACHEDIR.TAG"
	cacheDirSignature = "Signature: 8a477f597d28d172789f06886806bc55"
)

// maxCacheDirs bounds the cache directories one backup leaves out: restic matches
// every entry of the volume against every exclude pattern (two per directory). Those
// found beyond it are backed up.
const maxCacheDirs = 1000

// cacheDirs are the cache directories of one backup, by path, in the order found.
// The zero value (ExcludeCaches off) finds none.
type cacheDirs struct {
	enabled bool
	paths   map[string]bool
	list    []string
}

func newCacheDirs(enabled bool) *cacheDirs {
	return &cacheDirs{enabled: enabled, paths: map[string]bool{}}
}

// visit says whether the directory at p, met by the walk, is a cache directory whose
// contents the walk and the upload leave out, and records it. It costs one failed open
// for a directory without a tag, and a read of 43 bytes for one with. A directory
// whose path holds a line break is backed up, by both uploaders: restic reads its
// exclude patterns by lines.
func (c *cacheDirs) visit(p string) bool {
	if c == nil || !c.enabled || len(c.list) >= maxCacheDirs || strings.Contains(p, "\n") || !isCacheDir(p) {
		return false
	}
	p = filepath.Clean(p)
	c.paths[p] = true
	c.list = append(c.list, p)
	return true
}

// has says whether the directory at p is one the walk found.
func (c *cacheDirs) has(p string) bool {
	return c != nil && c.paths[filepath.Clean(p)]
}

func (c *cacheDirs) count() int64 {
	if c == nil {
		return 0
	}
	return int64(len(c.list))
}

// isCacheDir says whether dir holds a CACHEDIR.TAG that is a regular file beginning
// with the signature. The tag is opened without following a symlink and without
// blocking on a FIFO; one that cannot be read marks nothing.
func isCacheDir(dir string) bool {
	fd, err := unix.Open(filepath.Join(dir, cacheDirTag), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), cacheDirTag)
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return false
	}
	buf := make([]byte, len(cacheDirSignature))
	if _, err := io.ReadFull(f, buf); err != nil {
		return false
	}
	return string(buf) == cacheDirSignature
}

// tagEntry is the directory entry of the tag in the cache directory dir, for a walk
// that skips the rest of dir; nil when it is gone.
func tagEntry(dir string) (string, iofs.DirEntry) {
	p := filepath.Join(dir, cacheDirTag)
	st, err := os.Lstat(p)
	if err != nil {
		return p, nil
	}
	return p, iofs.FileInfoToDirEntry(st)
}

// resticExcludes are the lines of a restic --exclude-file that leave out the contents
// of the cache directories but their tags. Each name is matched literally: restic's
// pattern characters are escaped with a backslash, and '$' (restic expands environment
// variables in the file) is doubled. No path holds a line break (see visit), each
// line starts with '/' or '!' and ends with '*' or the tag's name, so restic's
// trimming of blanks and comments changes none.
func resticExcludes(dirs []string) []string {
	lines := make([]string, 0, 2*len(dirs))
	for _, d := range dirs {
		lit := resticLiteral(d)
		lines = append(lines, lit+"/*", "!"+lit+"/"+cacheDirTag)
	}
	return lines
}

func resticLiteral(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '\\', '*', '?', '[', ']':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '$':
			b.WriteString("$$")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
