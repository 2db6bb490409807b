package jail_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/fs/localfs"

	"github.com/holdfast-dev/holdfast/agent/jail"
)

// The test binary re-runs itself as a child in a mount namespace of its own, as the
// agent runs the data mover, and plays one of these roles there.
const (
	roleEnv  = "HOLDFAST_JAIL_TEST_ROLE"
	specEnv  = "HOLDFAST_JAIL_TEST_SPEC"
	extraEnv = "HOLDFAST_JAIL_TEST_EXTRA"
)

var roles = map[string]func(spec jail.Spec, extra string, in *bufio.Reader, out io.Writer) error{
	"inspect":        inspectRole,
	"list-swap-open": listSwapOpenRole,
	"backup-loop":    backupLoopRole,
	"enter-no-unshare": func(spec jail.Spec, _ string, _ *bufio.Reader, _ io.Writer) error {
		return jail.Enter(spec)
	},
}

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		var spec jail.Spec
		if err := json.Unmarshal([]byte(os.Getenv(specEnv)), &spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if err := roles[role](spec, os.Getenv(extraEnv), bufio.NewReader(os.Stdin), os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is the test binary running a role in a private mount namespace.
type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startChild(t *testing.T, role string, spec jail.Spec, extra string, unshare bool) *child {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the jail tests need root (CI and make test run as root): the jail is built with mount(2)")
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), roleEnv+"="+role, specEnv+"="+string(raw), extraEnv+"="+extra)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if unshare {
		cmd.SysProcAttr.Unshareflags = syscall.CLONE_NEWNS
	}
	c := &child{cmd: cmd}
	if c.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.out = bufio.NewReader(out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return c
}

// line reads the child's next line of output.
func (c *child) line(t *testing.T) string {
	t.Helper()
	s, err := c.out.ReadString('\n')
	if err != nil {
		t.Fatalf("reading from the jailed child: %v (%q)", err, s)
	}
	return strings.TrimSuffix(s, "\n")
}

// fixture is a volume whose owner plants symlinks, and the secrets it wants to read.
type fixture struct {
	volume, work, outside string
}

const (
	originalData  = "ORIGINAL DATA OF THE VOLUME\n"
	originalToken = "ORIGINAL TOKEN OF THE VOLUME\n"
	// The secrets the tenant tries to read: one on the node outside the jail, one
	// inside the jail but outside the volume (the job's own directory, where the store
	// credentials live).
	hostSecret = "SENTINEL: A SECRET OF THE NODE\n"
	workSecret = "SENTINEL: THE JOB'S STORE CREDENTIALS\n"
)

func newFixture(t *testing.T) fixture {
	t.Helper()
	base := t.TempDir()
	f := fixture{volume: filepath.Join(base, "volume"), work: filepath.Join(base, "work"), outside: filepath.Join(base, "outside")}
	write := func(path, content string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(f.volume, "data"), originalData)
	write(filepath.Join(f.volume, "sub", "token"), originalToken)
	write(filepath.Join(f.outside, "data"), hostSecret)
	write(filepath.Join(f.outside, "sub", "token"), hostSecret)
	// What "/work/data" and "/work/sub/token" name inside the jail.
	write(filepath.Join(f.work, "data"), workSecret)
	write(filepath.Join(f.work, "sub", "token"), workSecret)
	return f
}

func (f fixture) spec() jail.Spec { return jail.Spec{Volume: f.volume, Work: f.work} }

// swapTargets are the two places a planted symlink points: the node outside the jail
// (absolute host paths) and the job's own directory inside it.
func (f fixture) swapTargets() map[string]string {
	return map[string]string{"node": f.outside, "job directory": jail.WorkPath}
}

// swapFile replaces the volume's entry name by a symlink to target/name; the returned
// function puts the original back.
func swapEntry(t *testing.T, volume, name, target string) (restore func()) {
	t.Helper()
	path := filepath.Join(volume, name)
	if err := os.Rename(path, path+".real"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(target, name), path); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".real", path); err != nil {
			t.Fatal(err)
		}
	}
}

func noSecret(t *testing.T, what, got string) {
	t.Helper()
	if strings.Contains(got, "SENTINEL") {
		t.Errorf("%s read a secret from outside the volume: %q", what, got)
	}
}

// TestJailShowsOnlyTheJob checks what a job can see: its volume (read-only for a
// backup), its own directories, and no /proc, no ServiceAccount token, no other path
// of the node.
func TestJailShowsOnlyTheJob(t *testing.T) {
	f := newFixture(t)
	c := startChild(t, "inspect", f.spec(), "", true)
	var got inspection
	if err := json.Unmarshal([]byte(c.line(t)), &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got.Root, "volume") || !slices.Contains(got.Root, "work") {
		t.Fatalf("the jail's root shows %v; want volume and work in it", got.Root)
	}
	for _, name := range got.Root {
		if !slices.Contains([]string{"dev", "etc", "volume", "work"}, name) {
			t.Errorf("the jail's root shows %q; want only dev, etc, volume and work", name)
		}
	}
	if got.VolumeWrite == "" || !strings.Contains(got.VolumeWrite, "read-only") {
		t.Errorf("writing into a backup's volume: %q, want a read-only file system error", got.VolumeWrite)
	}
	if got.RootWrite == "" {
		t.Error("the jail's root is writable")
	}
	if got.Data != originalData {
		t.Errorf("/volume/data = %q, want the volume's file", got.Data)
	}
	if got.Proc == "" || got.Token == "" {
		t.Errorf("/proc (%q) and the ServiceAccount token (%q) must not exist in the jail", got.Proc, got.Token)
	}
}

type inspection struct {
	Root        []string
	VolumeWrite string
	RootWrite   string
	Data        string
	Proc, Token string
}

func inspectRole(spec jail.Spec, _ string, _ *bufio.Reader, out io.Writer) error {
	if err := jail.Enter(spec); err != nil {
		return err
	}
	var r inspection
	entries, err := os.ReadDir("/")
	if err != nil {
		return err
	}
	for _, e := range entries {
		r.Root = append(r.Root, e.Name())
	}
	r.VolumeWrite = errText(os.WriteFile("/volume/new", []byte("x"), 0o644))
	r.RootWrite = errText(os.Mkdir("/new", 0o755))
	b, err := os.ReadFile("/volume/data")
	if err != nil {
		return err
	}
	r.Data = string(b)
	_, err = os.Stat("/proc/self")
	r.Proc = errText(err)
	_, err = os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/token")
	r.Token = errText(err)
	return json.NewEncoder(out).Encode(r)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestListSwapOpen is the attack made deterministic: the job lists the volume, the
// pod's owner swaps a file and a directory for symlinks, and the job opens what it
// listed. Both the plain system calls and kopia's localfs (the file system the kopia
// uploader reads) must fail on the symlink, never read what it points to, and still
// see the symlink as a symlink.
func TestListSwapOpen(t *testing.T) {
	for kind, target := range newFixture(t).swapTargets() {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t)
			c := startChild(t, "list-swap-open", f.spec(), "", true)
			if got := c.line(t); got != "listed" {
				t.Fatalf("child said %q, want listed", got)
			}
			restoreData := swapEntry(t, f.volume, "data", target)
			restoreSub := swapEntry(t, f.volume, "sub", target)
			if _, err := io.WriteString(c.in, "swapped\n"); err != nil {
				t.Fatal(err)
			}
			var got opened
			if err := json.Unmarshal([]byte(c.line(t)), &got); err != nil {
				t.Fatal(err)
			}
			restoreData()
			restoreSub()
			for what, r := range map[string]result{
				"read /volume/data": got.Data, "read /volume/sub/token": got.Token, "list /volume/sub": got.List,
				"kopia open data": got.KopiaData, "kopia list sub": got.KopiaSub,
			} {
				noSecret(t, what, r.Content)
				if r.Err == "" {
					t.Errorf("%s after the swap succeeded (%q); want it to fail on the symlink", what, r.Content)
				}
			}
			if got.Link != filepath.Join(target, "data") {
				t.Errorf("readlink /volume/data = %q, want the symlink kept as a symlink (%s)", got.Link, filepath.Join(target, "data"))
			}
		})
	}
}

type result struct{ Content, Err string }

type opened struct {
	Data, Token, List, KopiaData, KopiaSub result
	Link                                   string
}

func listSwapOpenRole(spec jail.Spec, _ string, in *bufio.Reader, out io.Writer) error {
	if err := jail.Enter(spec); err != nil {
		return err
	}
	ctx := context.Background()
	if _, err := os.ReadDir("/volume"); err != nil {
		return err
	}
	root, err := localfs.Directory("/volume")
	if err != nil {
		return err
	}
	entries := map[string]fs.Entry{}
	if err := fs.IterateEntries(ctx, root, func(_ context.Context, e fs.Entry) error {
		entries[e.Name()] = e
		return nil
	}); err != nil {
		return err
	}
	fmt.Fprintln(out, "listed")
	if _, err := in.ReadString('\n'); err != nil {
		return err
	}
	var r opened
	b, err := os.ReadFile("/volume/data")
	r.Data = result{string(b), errText(err)}
	b, err = os.ReadFile("/volume/sub/token")
	r.Token = result{string(b), errText(err)}
	names, err := os.ReadDir("/volume/sub")
	r.List = result{fmt.Sprint(names), errText(err)}
	if err == nil && len(names) == 0 {
		r.List.Err = "empty"
	}
	r.Link, _ = os.Readlink("/volume/data")
	if file, ok := entries["data"].(fs.File); ok {
		r.KopiaData = readKopiaFile(ctx, file)
	} else {
		r.KopiaData.Err = "kopia listed data as something else than a file"
	}
	if dir, ok := entries["sub"].(fs.Directory); ok {
		var content strings.Builder
		err := fs.IterateEntries(ctx, dir, func(ctx context.Context, e fs.Entry) error {
			if f, ok := e.(fs.File); ok {
				got := readKopiaFile(ctx, f)
				content.WriteString(got.Content)
				if got.Err != "" {
					return errors.New(got.Err)
				}
			}
			return nil
		})
		r.KopiaSub = result{content.String(), errText(err)}
	} else {
		r.KopiaSub.Err = "kopia listed sub as something else than a directory"
	}
	return json.NewEncoder(out).Encode(r)
}

func readKopiaFile(ctx context.Context, f fs.File) result {
	rd, err := f.Open(ctx)
	if err != nil {
		return result{Err: err.Error()}
	}
	defer rd.Close()
	b, err := io.ReadAll(rd)
	return result{string(b), errText(err)}
}

// TestEnterRefusesTheParentsNamespace: a jail built in the agent's own mount namespace
// would take the node's volumes away from the agent; Enter must refuse.
func TestEnterRefusesTheParentsNamespace(t *testing.T) {
	f := newFixture(t)
	c := startChild(t, "enter-no-unshare", f.spec(), "", false)
	_ = c.in.Close()
	err := c.cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("Enter outside a private namespace: exit %v, want 1", err)
	}
	if _, err := os.Stat(filepath.Join(f.work, ".jail")); err == nil {
		t.Error("Enter built a jail in the parent's namespace")
	}
}
