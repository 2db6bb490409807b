package kopiarestore

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/kopia/kopia/repo/object"
)

// kopia does not record hard links: each name of a file is stored as a file of its
// own (the data once, deduplicated). Holdfast lists the names of each file with more
// than one in the volume in a third file at the snapshot's root, LinksName, one name
// a line: "<group number> <path>" (the path quoted as in the attributes file).
// Holdfast's restore writes the first name of a group it reaches and makes the others
// hard links to it, in whatever order kopia's parallel restore reaches them; the kopia
// CLI restores the list as a file and each name as a copy.
//
// The list is read before kopia's upload, from a volume that keeps changing: an
// application that replaces one name (writes a new file, renames it over the name)
// meanwhile leaves a snapshot whose names of one group hold different contents. So a
// name is linked only to a name of its group that the snapshot stores with the same
// content (the same object); a name with other content is written on its own. A name
// of the list that the snapshot lacks, or holds as other than a file, is never
// written as a file, and so is passed over.

// LinksName is the stored name of the hard-link list at a snapshot's root.
const LinksName = NamePrefix + "links"

// WriteLink appends name path of group to w.
func WriteLink(w io.Writer, group int, path string) error {
	_, err := fmt.Fprintf(w, "%d %s\n", group, quote(path))
	return err
}

// ReadLinks reads a list WriteLink wrote: the group of each name.
func ReadLinks(r io.Reader) (map[string]int, error) {
	out := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		num, quoted, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			return nil, fmt.Errorf("line %d: not a hard link", line)
		}
		g, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		p, err := unquote(quoted)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out[p] = g
	}
	return out, sc.Err()
}

// linkGroups hands out, per group, the name written first.
type linkGroups struct {
	of map[string]int // group by name
	mu sync.Mutex
	// groups hold the first name written, once written; their locks make the other
	// names wait while the first one is written.
	groups map[int]*linkGroup
}

type linkGroup struct {
	mu sync.Mutex
	// written is, by the snapshot object holding its content, the first name of the
	// group written with that content.
	written map[object.ID]string
}

// group returns the group of rel, locked, or nil when rel has no other name.
func (l *linkGroups) group(rel string) *linkGroup {
	if l == nil {
		return nil
	}
	id, ok := l.of[rel]
	if !ok {
		return nil
	}
	l.mu.Lock()
	g, ok := l.groups[id]
	if !ok {
		g = &linkGroup{written: map[object.ID]string{}}
		l.groups[id] = g
	}
	l.mu.Unlock()
	g.mu.Lock()
	return g
}
