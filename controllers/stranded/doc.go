// Package stranded is the manager's guard against work no agent will ever do: a
// PodVolumeBackup or PodVolumeRestore whose node is gone, is not Linux, or runs no
// Holdfast agent is failed, with one sentence, once a deadline has passed.
package stranded
