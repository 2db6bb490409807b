// Package browse serves BrowseSessions: a short-lived, read-only look into the backups
// of one volume. The session controller lists the volume's restore points from the
// store and, when the session names a snapshot, starts a relay pod in the session's
// namespace; the Server, on the manager's webhook server, answers that relay pod alone
// (its pod-bound token) for as long as the session lives, and records each read as an
// event on the session. kubectl holdfast snapshots, ls and get drive it (docs/cli.md).
package browse
