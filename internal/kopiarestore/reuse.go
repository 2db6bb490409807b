package kopiarestore

// ReuseName is the stored name, at a snapshot's root, of the list a backup keeps for
// the next one about the large files it stored: for each, a fingerprint of every chunk
// of its object (see internal/repository's reusing writer). It describes the snapshot's
// own objects and holds nothing of the volume's data; no restore writes it.
const ReuseName = NamePrefix + "reuse"
