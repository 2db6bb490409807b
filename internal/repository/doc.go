// Package repository is the one place Holdfast touches backup repositories: it builds a
// store from a BackupStorageLocation, probes it, and initialises, opens, writes, reads
// and maintains kopia (as a library) and restic (as a binary) repositories. The manager
// and the node agent both use it, so the two never disagree on layout, keys or errors.
//
// The manager initialises repositories and maintains them (Config.Owner =
// ManagerOwner). An agent only opens a Ready BackupRepository:
//
//	store, _ := repository.StoreFromLocation(bsl, credentialsSecret)
//	key, _ := repository.PasswordFromSecret(keySecret) // brepo.Status.KeySecretName
//	rep, err := repository.Open(ctx, repository.Config{Store: store, Uploader: brepo.Spec.Uploader,
//		Namespace: brepo.Namespace, Password: key, WorkDir: dir, ResticPath: restic, Owner: "agent@" + node})
//	defer rep.Close(ctx)
//
// Errors a person can act on are *Error values; compare with errors.Is against the Err*
// kinds and show Error() (one sentence) in status.
package repository
