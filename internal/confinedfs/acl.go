package confinedfs

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// POSIX ACLs travel in a tar stream as SCHILY.acl.access and SCHILY.acl.default PAX
// records (star's format, which restic dump writes): one "tag:qualifier:perms" entry
// per line, numeric ids. Linux keeps them in the system.posix_acl_access and
// system.posix_acl_default attributes, in the binary form below (posix_acl_xattr.h).

const (
	paxACLAccess  = "SCHILY.acl.access"
	paxACLDefault = "SCHILY.acl.default"
)

const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
	aclUndefID  = 0xffffffff
	aclVersion  = 2
)

// aclXattr converts an ACL in text form to the value of a system.posix_acl_*
// attribute, entries in the order the kernel requires (by tag, then id).
func aclXattr(text string) ([]byte, error) {
	type aclEntry struct {
		tag, perm uint16
		id        uint32
	}
	var entries []aclEntry
	for _, line := range strings.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == ',' }) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("ACL entry %q is not tag:qualifier:perms", line)
		}
		e := aclEntry{id: aclUndefID}
		named := parts[1] != ""
		switch {
		case parts[0] == "user" && !named:
			e.tag = aclUserObj
		case parts[0] == "user":
			e.tag = aclUser
		case parts[0] == "group" && !named:
			e.tag = aclGroupObj
		case parts[0] == "group":
			e.tag = aclGroup
		case parts[0] == "mask" && !named:
			e.tag = aclMask
		case parts[0] == "other" && !named:
			e.tag = aclOther
		default:
			return nil, fmt.Errorf("ACL entry %q has an unknown tag", line)
		}
		if named {
			id, err := strconv.ParseUint(parts[1], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("ACL entry %q names a user or group by name, not id", line)
			}
			e.id = uint32(id)
		}
		perm := parts[2]
		if len(perm) != 3 {
			return nil, fmt.Errorf("ACL entry %q: permissions are not rwx", line)
		}
		for i := range 3 {
			c := perm[i]
			switch {
			case c == "rwx"[i]:
				e.perm |= 4 >> i
			case c != '-':
				return nil, fmt.Errorf("ACL entry %q: permissions are not rwx", line)
			}
		}
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].tag != entries[j].tag {
			return entries[i].tag < entries[j].tag
		}
		return entries[i].id < entries[j].id
	})
	b := binary.LittleEndian.AppendUint32(nil, aclVersion)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b, nil
}
