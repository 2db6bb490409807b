package controlplane

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

// deploymentGoEnv is the Go runtime environment (GOGC, GOMEMLIMIT) the manager's
// Deployment (config/manager/manager.yaml) gives `holdfast manager`, as KEY=value
// lines for the bench's manager process: a GOMEMLIMIT taken from the container's
// memory limit is resolved to that limit in bytes. The bench measures the manager's
// memory as it runs in a cluster, not with Go's defaults.
func deploymentGoEnv() ([]string, error) {
	path := filepath.Join(testenv.RepoRoot(), "config", "manager", "manager.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var d appsv1.Deployment
		if err := yaml.Unmarshal([]byte(doc), &d); err != nil || d.Kind != "Deployment" {
			continue
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name != "manager" {
				continue
			}
			var env []string
			for _, e := range c.Env {
				if e.Name != "GOGC" && e.Name != "GOMEMLIMIT" {
					continue
				}
				switch {
				case e.ValueFrom == nil:
					env = append(env, e.Name+"="+e.Value)
				case e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory":
					limit, ok := c.Resources.Limits["memory"]
					if !ok {
						return nil, fmt.Errorf("%s: %s refers to limits.memory, which the manager container does not set", path, e.Name)
					}
					env = append(env, fmt.Sprintf("%s=%d", e.Name, limit.Value()))
				default:
					return nil, fmt.Errorf("%s: the bench cannot resolve %s", path, e.Name)
				}
			}
			return env, nil
		}
	}
	return nil, fmt.Errorf("%s: no Deployment with a manager container", path)
}
