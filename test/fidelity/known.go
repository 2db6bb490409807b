package fidelity

// KnownDifferences are what a Holdfast restore of the tree (Generate) does not give
// back with uploader ("kopia" or "restic"), outside the agent's jail, and why: the
// integration round trip (TestRoundTripFidelity in internal/repository) checks against
// it, and the agent's round trip on the real cluster (test/e2e) adds what the data
// mover's privileges and restore-wait take away. docs/agent.md ("What is preserved")
// says the same to users. An entry leaves this list when a fix makes the difference go
// away: Check reports an entry that no longer occurs, as a difference that is not listed.
func KnownDifferences(uploader string) []Known {
	switch uploader {
	case "kopia":
		return []Known{
			{Path: Socket, Field: "missing", Why: "sockets are not backed up (counted at backup)"},
			zerosBecomeHoles,
		}
	case "restic":
		return []Known{
			{Path: BadUTF8, Field: "mtime-subsecond", Why: "restic ls shows names that are not UTF-8 with U+FFFD, so their times to the nanosecond are not used: the tar's whole seconds"},
			{Path: BadUTF8Dir, Field: "mtime-subsecond", Why: "as " + BadUTF8},
			{Path: BadUTF8Dir + "/inside", Field: "mtime-subsecond", Why: "as " + BadUTF8},
			{Path: "bad-\uFFFD\uFFFD.txt", Field: "mtime-subsecond", Why: "restic ls shows " + BadUTF8 + " under this name too: neither time is used"},
			{Path: FIFOBadUTF8, Field: "missing", Why: "restic dump leaves FIFOs out, and restic ls shows its name with U+FFFD, which is not trusted"},
			{Path: FIFOLookalike, Field: "mtime-subsecond", Why: "restic ls shows " + FIFOBadUTF8 + " under this name too"},
			{Path: HardBadUTF8, Field: "hardlink", Why: "restic ls shows its name with U+FFFD, which is not trusted: restored as a copy"},
			{Path: HardBadTarget, Field: "hardlink", Why: "as " + HardBadUTF8},
			{Path: HardBadUTF8, Field: "mtime-subsecond", Why: "as " + HardBadUTF8},
			{Path: HardLookalike, Field: "mtime-subsecond", Why: "restic ls shows " + HardBadUTF8 + " under this name too"},
			{Path: CharDev, Field: "missing", Why: "restic dump writes a device node as an empty file and restic ls does not give its number: counted as not restored"},
			{Path: Socket, Field: "missing", Why: "restic does not store sockets"},
			zerosBecomeHoles,
		}
	}
	return nil
}

// zerosBecomeHoles: both restores write runs of zeros as holes, so a file of zeros
// comes back sparse (same content, less space).
var zerosBecomeHoles = Known{Path: ZeroFile, Field: "sparse", Why: "runs of zeros are restored as holes"}

// HardLinksCopied are the differences of a restore that writes every name of the
// tree's hard-linked file as a copy.
func HardLinksCopied(why string) []Known {
	var out []Known
	for _, p := range []string{HardA, HardB, HardC} {
		out = append(out, Known{Path: p, Field: "hardlink", Why: why})
	}
	return out
}

// Missing counts the entries of want of type typ ("fifo", "chardev", ...) that got
// does not hold as that type: what a restore must count as not restored.
func Missing(want, got Manifest, typ string) int64 {
	var n int64
	for p, e := range want {
		if e.Type == typ && got[p].Type != typ {
			n++
		}
	}
	return n
}
