package mover

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/holdfast-dev/holdfast/agent/jail"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// Confine is the first stage of the data mover, run as `holdfast agent-mover` in the
// private mount namespace the agent starts it in (see Run). It reads the job, builds
// the jail that shows the job only its own volume, directories and store (package
// jail), and re-executes this binary inside it as args (the second stage, which runs
// Serve) with the job's paths as the jail shows them and only the capabilities that
// move files. It returns only when it could not: the job then fails with a Result
// that says why, written to out.
func Confine(in io.Reader, out io.Writer, args []string) error {
	var job Job
	if err := json.NewDecoder(in).Decode(&job); err != nil {
		return fmt.Errorf("reading the job: %w", err)
	}
	fail := func(err error) error {
		return json.NewEncoder(out).Encode(Event{Result: &Result{Error: fmt.Sprintf(
			"the agent could not confine the data mover to the volume, so nothing was read or written: %v "+
				"(the agent container needs CAP_SYS_ADMIN and CAP_SYS_CHROOT and no AppArmor profile that denies mount; see docs/security.md)", err)}})
	}
	self, err := os.Executable()
	if err != nil {
		return fail(fmt.Errorf("finding the mover binary: %w", err))
	}
	spec, confined, err := jailFor(job, self)
	if err != nil {
		return fail(err)
	}
	if err := jail.Enter(spec); err != nil {
		return fail(err)
	}
	data, err := json.Marshal(confined)
	if err != nil {
		return fail(err)
	}
	return fail(jail.Exec(jail.SelfPath, args, confinedEnvironment(os.Environ()), data))
}

// jailFor is what the job may see, and the job as it reads inside the jail.
func jailFor(job Job, self string) (jail.Spec, Job, error) {
	spec := jail.Spec{Volume: job.Dir, VolumeRoot: job.Root, Writable: job.Kind == KindRestore, Work: job.WorkDir, Cache: job.CacheDir, Self: self}
	job.Dir, job.Root, job.WorkDir = jail.VolumePath, "", jail.WorkPath
	if job.CacheDir != "" {
		job.CacheDir = jail.CachePath
	}
	if fs := job.Location.Filesystem; fs != nil {
		spec.Store = fs.Path
	}
	if job.Uploader == v1.UploaderRestic {
		restic := job.ResticPath
		if restic == "" {
			restic = "restic"
		}
		path, err := exec.LookPath(restic)
		if err != nil {
			return spec, job, fmt.Errorf("finding the restic binary: %w", err)
		}
		spec.Restic, job.ResticPath = path, jail.ResticPath
	}
	return spec, job, nil
}

// confinedEnvironment keeps what tunes the Go runtime and where CA roots are; nothing
// else of the agent's environment (its Kubernetes service address, for one) is the
// job's business.
func confinedEnvironment(env []string) []string {
	out := []string{"HOME=" + jail.WorkPath, "TMPDIR=" + jail.WorkPath, "PATH=/"}
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "GO") || name == "SSL_CERT_FILE" || name == "TZ" {
			out = append(out, kv)
		}
	}
	return out
}
