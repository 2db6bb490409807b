// Package recovery is `holdfast recover`: with a storage location's manifest, the
// store's credentials and a recovery identity, and no cluster at all, it lists the
// repositories in the store and their restore points, and hands out a repository's
// key with the exact kopia or restic commands that restore from it without Holdfast.
package recovery

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"

	"filippo.io/age"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/keyescrow"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// Usage is the command's help.
const Usage = `Usage:
  holdfast recover list     --location FILE --identity FILE [flags]
  holdfast recover password --location FILE --identity FILE --namespace NS --uploader kopia|restic [flags]

Reads a storage location without a cluster: only its manifest, the store's
credentials and an age identity of one of its recovery recipients are needed.

  list      lists the repositories in the store, whether their key is escrowed, and
            the restore points of each repository the identity opens
  password  decrypts a repository's key from its escrow, checks that it opens the
            repository, writes it to <out-dir>/<uploader>-<namespace>.password (mode
            0600) and prints the kopia or restic commands that restore from it

Store credentials (S3): --credentials FILE, either the credentials Secret's manifest
(kubectl get secret -o yaml) or lines KEY=VALUE; otherwise the environment variables
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN).

Flags:
`

// Main runs `holdfast recover` with args (after "recover").
func Main(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, Usage)
		newFlags(&options{}, stderr).PrintDefaults()
		if len(args) == 0 {
			return errors.New("name a subcommand: list or password")
		}
		return nil
	}
	var o options
	fs := newFlags(&o, stderr)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	switch args[0] {
	case "list":
		return list(ctx, o, stdout)
	case "password":
		return password(ctx, o, stdout)
	}
	return fmt.Errorf("unknown subcommand %q: use list or password", args[0])
}

type options struct {
	location, name, credentials, identity, path string
	namespace, uploader, outDir, restic         string
	stdout                                      bool
}

func newFlags(o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("holdfast recover", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() { fmt.Fprint(fs.Output(), Usage); fs.PrintDefaults() }
	fs.StringVar(&o.location, "location", "", "the BackupStorageLocation manifest (YAML; a file of several documents is searched for it)")
	fs.StringVar(&o.name, "name", "", "which BackupStorageLocation of the file, when it holds several")
	fs.StringVar(&o.credentials, "credentials", "", "the store credentials: the credentials Secret's manifest or KEY=VALUE lines (default: the AWS_* environment variables)")
	fs.StringVar(&o.identity, "identity", "", "an age identity file (AGE-SECRET-KEY-1... lines) of a recovery recipient of the location")
	fs.StringVar(&o.path, "path", "", "for a filesystem location: where its directory is mounted here, if not at spec.filesystem.path")
	fs.StringVar(&o.namespace, "namespace", "", "password: the repository's namespace")
	fs.StringVar(&o.uploader, "uploader", "", "password: the repository's uploader, kopia or restic")
	fs.StringVar(&o.outDir, "out-dir", "holdfast-recovery", "password: the directory (made 0700) for the password file, the store credentials and kopia's config")
	fs.BoolVar(&o.stdout, "stdout", false, "password: print only the password, on standard output, and write no file")
	fs.StringVar(&o.restic, "restic", "restic", "the restic binary, to open restic repositories")
	return fs
}

// loaded is what every subcommand needs: the store and the identities.
type loaded struct {
	bsl        *v1.BackupStorageLocation
	store      repository.Store
	identities []age.Identity
	workDir    string
}

func load(o options) (*loaded, error) {
	if o.location == "" || o.identity == "" {
		return nil, errors.New("--location and --identity are required")
	}
	bsl, err := readLocation(o.location, o.name)
	if err != nil {
		return nil, err
	}
	if bsl.Spec.Filesystem != nil && o.path != "" {
		bsl.Spec.Filesystem.Path = o.path
	}
	var creds *corev1.Secret
	if bsl.Spec.S3 != nil {
		if creds, err = readCredentials(o.credentials); err != nil {
			return nil, err
		}
	}
	st, err := repository.StoreFromLocation(bsl, creds)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(o.identity)
	if err != nil {
		return nil, fmt.Errorf("reading the identity: %w", err)
	}
	ids, err := keyescrow.ParseIdentities(raw)
	if err != nil {
		return nil, fmt.Errorf("%s is %w", o.identity, err)
	}
	work, err := os.MkdirTemp("", "holdfast-recover-")
	if err != nil {
		return nil, err
	}
	return &loaded{bsl: bsl, store: st, identities: ids, workDir: work}, nil
}

func (l *loaded) close() { _ = os.RemoveAll(l.workDir) }

// readLocation finds the BackupStorageLocation in a manifest file.
func readLocation(file, name string) (*v1.BackupStorageLocation, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading the storage location: %w", err)
	}
	var found []*v1.BackupStorageLocation
	for _, doc := range splitYAML(raw) {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil || meta.Kind != "BackupStorageLocation" {
			continue
		}
		bsl := &v1.BackupStorageLocation{}
		if err := yaml.UnmarshalStrict(doc, bsl); err != nil {
			return nil, fmt.Errorf("%s: a BackupStorageLocation that cannot be read: %w", file, err)
		}
		if name == "" || bsl.Name == name {
			found = append(found, bsl)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) == 0 && name != "":
		return nil, fmt.Errorf("%s holds no BackupStorageLocation named %s", file, name)
	case len(found) == 0:
		return nil, fmt.Errorf("%s holds no BackupStorageLocation", file)
	}
	return nil, fmt.Errorf("%s holds %d BackupStorageLocations: choose one with --name", file, len(found))
}

func splitYAML(raw []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), raw...), []byte("\n---")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

// readCredentials reads the S3 credentials from a Secret manifest, KEY=VALUE lines,
// or (file "") the environment.
func readCredentials(file string) (*corev1.Secret, error) {
	s := &corev1.Secret{Data: map[string][]byte{}}
	if file == "" {
		s.Name = "from the environment"
		for _, k := range []string{repository.SecretAccessKeyID, repository.SecretSecretAccessKey, repository.SecretSessionToken} {
			if v := os.Getenv(k); v != "" {
				s.Data[k] = []byte(v)
			}
		}
		if len(s.Data) == 0 {
			return nil, fmt.Errorf("no store credentials: pass --credentials or set %s and %s", repository.SecretAccessKeyID, repository.SecretSecretAccessKey)
		}
		return s, nil
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading the credentials: %w", err)
	}
	s.Name = file
	var manifest corev1.Secret
	if err := yaml.Unmarshal(raw, &manifest); err == nil && manifest.Kind == "Secret" {
		for k, v := range manifest.Data {
			s.Data[k] = v
		}
		for k, v := range manifest.StringData {
			s.Data[k] = []byte(v)
		}
		return s, nil
	}
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "export "))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s is neither a Secret manifest nor KEY=VALUE lines", file)
		}
		s.Data[strings.TrimSpace(k)] = []byte(strings.Trim(strings.TrimSpace(v), `"'`))
	}
	return s, nil
}

// stored is one repository found in the store.
type stored struct {
	uploader  v1.Uploader
	namespace string
	hasData   bool
	escrow    bool
}

// findRepositories lists <uploader>/<namespace>/ directories and
// <uploader>/<namespace>.key.age escrows under the store's root.
func findRepositories(ctx context.Context, st repository.Store) ([]stored, error) {
	var out []stored
	for _, u := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		dirs, objects, err := st.List(ctx, string(u))
		if err != nil {
			return nil, err
		}
		byNS := map[string]*stored{}
		get := func(ns string) *stored {
			if byNS[ns] == nil {
				byNS[ns] = &stored{uploader: u, namespace: ns}
			}
			return byNS[ns]
		}
		for _, d := range dirs {
			get(d).hasData = true
		}
		for _, o := range objects {
			if ns, ok := strings.CutSuffix(o, keyescrow.ObjectSuffix); ok {
				get(ns).escrow = true
			}
		}
		names := make([]string, 0, len(byNS))
		for ns := range byNS {
			names = append(names, ns)
		}
		sort.Strings(names)
		for _, ns := range names {
			out = append(out, *byNS[ns])
		}
	}
	return out, nil
}

// key decrypts the escrow of a repository.
func (l *loaded) key(ctx context.Context, uploader v1.Uploader, namespace string) (keyescrow.Escrow, error) {
	data, err := keyescrow.Read(ctx, l.store, uploader, namespace)
	if keyescrow.IsNotExist(err) {
		return keyescrow.Escrow{}, fmt.Errorf("the %s repository of namespace %s has no key escrow in the store: its key is only where its key Secret was kept", uploader, namespace)
	}
	if err != nil {
		return keyescrow.Escrow{}, err
	}
	e, err := keyescrow.Open(data, l.identities)
	if errors.Is(err, keyescrow.ErrWrongIdentity) {
		return keyescrow.Escrow{}, fmt.Errorf("the identity is not a recipient of the key escrow of the %s repository of namespace %s", uploader, namespace)
	}
	if err == nil && (e.Namespace != namespace || e.Uploader != uploader) {
		err = fmt.Errorf("the escrow at %s holds the key of the %s repository of namespace %s: the store was changed by hand", keyescrow.ObjectPath(uploader, namespace), e.Uploader, e.Namespace)
	}
	return e, err
}

func (l *loaded) open(ctx context.Context, uploader v1.Uploader, namespace, password, restic string) (repository.Repository, error) {
	return repository.Open(ctx, repository.Config{Store: l.store, Uploader: uploader, Namespace: namespace, Password: password,
		WorkDir: l.workDir, ResticPath: restic, Owner: "recover@holdfast"})
}

func list(ctx context.Context, o options, stdout io.Writer) error {
	l, err := load(o)
	if err != nil {
		return err
	}
	defer l.close()
	repos, err := findRepositories(ctx, l.store)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Storage location %s: %s\n", l.bsl.Name, l.store.URL(""))
	if len(repos) == 0 {
		fmt.Fprintln(stdout, "No repositories.")
		return nil
	}
	for _, r := range repos {
		url := l.store.URL(repository.Location(r.uploader, r.namespace))
		fmt.Fprintf(stdout, "\n%s repository of namespace %s: %s\n", r.uploader, r.namespace, url)
		if !r.hasData {
			fmt.Fprintln(stdout, "  key escrowed, but no data (the repository was never initialised)")
			continue
		}
		e, err := l.key(ctx, r.uploader, r.namespace)
		if err != nil {
			fmt.Fprintf(stdout, "  key: not recovered: %v\n", err)
			continue
		}
		fmt.Fprintf(stdout, "  key: recovered from its escrow (repository %s on location %s, key made %s)\n", e.Repository, e.StorageLocation, e.KeyCreated.Format("2006-01-02 15:04:05Z07:00"))
		rep, err := l.open(ctx, r.uploader, r.namespace, e.Password, o.restic)
		if err != nil {
			fmt.Fprintf(stdout, "  cannot be opened with the escrowed key: %v\n", err)
			continue
		}
		snaps, err := rep.Snapshots(ctx, "")
		_ = rep.Close(ctx)
		if err != nil {
			fmt.Fprintf(stdout, "  listing snapshots failed: %v\n", err)
			continue
		}
		fmt.Fprintf(stdout, "  restore points: %d\n", len(snaps))
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  SOURCE\tSNAPSHOT\tTIME\tSIZE")
		for _, s := range snaps {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\n", s.SourcePath, s.ID, s.StartTime.UTC().Format("2006-01-02 15:04:05Z"), s.Size)
		}
		_ = tw.Flush()
	}
	return nil
}

func password(ctx context.Context, o options, stdout io.Writer) error {
	uploader := v1.Uploader(o.uploader)
	if o.namespace == "" || (uploader != v1.UploaderKopia && uploader != v1.UploaderRestic) {
		return errors.New("password needs --namespace and --uploader kopia or restic")
	}
	l, err := load(o)
	if err != nil {
		return err
	}
	defer l.close()
	e, err := l.key(ctx, uploader, o.namespace)
	if err != nil {
		return err
	}
	rep, err := l.open(ctx, uploader, o.namespace, e.Password, o.restic)
	if err != nil {
		return fmt.Errorf("the escrowed key does not open the repository: %w", err)
	}
	_ = rep.Close(ctx)
	if o.stdout {
		_, err := fmt.Fprintln(stdout, e.Password)
		return err
	}
	dir, err := filepath.Abs(o.outDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	passwordFile := filepath.Join(dir, string(uploader)+"-"+o.namespace+".password")
	if err := writePrivate(passwordFile, []byte(e.Password)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# The key of the %s repository of namespace %s is in %s (mode 0600).\n", uploader, o.namespace, passwordFile)
	return printCommands(stdout, l.store, uploader, o.namespace, dir, passwordFile)
}

// writePrivate writes a file only its owner can read, replacing one that is there.
func writePrivate(p string, data []byte) error {
	_ = os.Remove(p)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// sq quotes s for a POSIX shell.
func sq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// printCommands prints the shell commands that reach the repository with the kopia or
// restic CLI: nothing secret is on a command line (the credentials and the key are read
// from files), and kopia connects read-only with a config file of its own.
func printCommands(w io.Writer, st repository.Store, uploader v1.Uploader, namespace, dir, passwordFile string) error {
	loc := repository.Location(uploader, namespace)
	fmt.Fprintf(w, "# Restore with the %s command-line tool, without Holdfast:\n", uploader)
	var kopiaConnect, resticRepo string
	var resticOpts []string
	if s := st.S3; s != nil {
		envFile := filepath.Join(dir, "store.env")
		env := fmt.Sprintf("%s=%s\n%s=%s\n", repository.SecretAccessKeyID, s.AccessKeyID, repository.SecretSecretAccessKey, s.SecretAccessKey)
		if s.SessionToken != "" {
			env += repository.SecretSessionToken + "=" + s.SessionToken + "\n"
		}
		if err := writePrivate(envFile, []byte(env)); err != nil {
			return err
		}
		fmt.Fprintf(w, "set -a; . %s; set +a\n", sq(envFile))
		key := strings.TrimPrefix(path.Join(s.Prefix, loc), "/")
		kopiaConnect = fmt.Sprintf("s3 --bucket=%s --prefix=%s --endpoint=%s", sq(s.Bucket), sq(key+"/"), sq(s.Endpoint))
		if s.Insecure {
			kopiaConnect += " --disable-tls"
		}
		if s.Region != "" {
			kopiaConnect += " --region=" + sq(s.Region)
			resticOpts = append(resticOpts, "-o s3.region="+sq(s.Region))
		}
		if len(s.CABundle) > 0 {
			ca := filepath.Join(dir, "ca.pem")
			if err := os.WriteFile(ca, s.CABundle, 0o600); err != nil {
				return err
			}
			kopiaConnect += " --root-ca-pem-path=" + sq(ca)
			resticOpts = append(resticOpts, "--cacert "+sq(ca))
		}
		if s.ForcePathStyle {
			resticOpts = append(resticOpts, "-o s3.bucket-lookup=path")
		}
	} else {
		kopiaConnect = "filesystem --path=" + sq(filepath.Join(st.Filesystem.Path, filepath.FromSlash(loc)))
	}
	resticRepo = repository.ResticRepository(repository.Config{Store: st, Uploader: v1.UploaderRestic, Namespace: namespace})
	switch uploader {
	case v1.UploaderKopia:
		kopia := "kopia --config-file=" + sq(filepath.Join(dir, "kopia-"+namespace+".config"))
		fmt.Fprintf(w, "export KOPIA_PASSWORD=\"$(cat %s)\"\n", sq(passwordFile))
		fmt.Fprintf(w, "%s repository connect %s --readonly --no-check-for-updates\n", kopia, kopiaConnect)
		fmt.Fprintf(w, "%s snapshot list --all\n", kopia)
		fmt.Fprintf(w, "# then: %s snapshot restore <snapshot-id> <target-directory>\n", kopia)
	case v1.UploaderRestic:
		restic := strings.Join(append([]string{"restic", "-r", sq(resticRepo), "--password-file", sq(passwordFile)}, resticOpts...), " ")
		fmt.Fprintf(w, "%s snapshots\n", restic)
		fmt.Fprintf(w, "# then: %s restore <snapshot-id>:/volume --target <target-directory>\n", restic)
		fmt.Fprintln(w, "# (a snapshot holds the path the agent read, /volume: the path after the ':' restores its contents at the target)")
	}
	return nil
}
