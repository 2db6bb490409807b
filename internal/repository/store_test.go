package repository

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// TestKeySecretNamesOfACollidingPairDiffer: joined with dashes alone, namespace team-a
// with repository main-kopia and namespace team with a-main-kopia gave one Secret name,
// so two namespaces shared one key.
func TestKeySecretNamesOfACollidingPairDiffer(t *testing.T) {
	a, b := KeySecretName("team-a", "main-kopia"), KeySecretName("team", "a-main-kopia")
	if a == b {
		t.Fatalf("KeySecretName(team-a, main-kopia) = KeySecretName(team, a-main-kopia) = %s", a)
	}
	// The readable part stays, so kubectl get secrets still says whose key it is.
	if !strings.HasPrefix(a, "repository-key-team-a-main-kopia-") || !strings.HasPrefix(b, "repository-key-team-a-main-kopia-") {
		t.Errorf("names %s and %s lost their readable part", a, b)
	}
	// Names are never recomputed for an existing key (status.keySecretName and the
	// labels find it), but a silent change would make new repositories of an
	// upgraded manager disagree with the docs: pin one.
	if want := "repository-key-shop-minio-kopia-ec5d4ac3a4821f00"; KeySecretName("shop", "minio-kopia") != want {
		t.Errorf("KeySecretName(shop, minio-kopia) = %s, want %s", KeySecretName("shop", "minio-kopia"), want)
	}
}

// nameCutAt returns a BackupRepository name (a valid DNS subdomain of 253 characters)
// whose character at the point where KeySecretName cuts the name for namespace ns is
// c, so the kept part ends in c.
func nameCutAt(ns string, c byte) string {
	kept := 253 - 17 - len("repository-key-"+ns+"-")
	b := []byte(strings.Repeat("a", 253))
	b[kept-1] = c
	return string(b)
}

func TestKeySecretNameIsAlwaysAValidSecretName(t *testing.T) {
	ns63 := strings.Repeat("n", 63)
	for _, tc := range []struct {
		name, namespace, repo string
	}{
		{name: "short", namespace: "shop", repo: "minio-kopia"},
		{name: "exactly 253 characters is not cut", namespace: "shop", repo: strings.Repeat("a", 253-17-len("repository-key-shop-"))},
		{name: "name of 253 characters", namespace: "shop", repo: strings.Repeat("a", 253)},
		{name: "longest namespace and name", namespace: ns63, repo: strings.Repeat("b", 253)},
		{name: "cut lands on a dot", namespace: "shop", repo: nameCutAt("shop", '.')},
		{name: "cut lands on a dot, longest namespace", namespace: ns63, repo: nameCutAt(ns63, '.')},
		{name: "cut lands on a dash", namespace: "shop", repo: nameCutAt("shop", '-')},
		{name: "cut lands just after a dot", namespace: "shop", repo: nameCutAt("shop", 'a')[:216] + "." + strings.Repeat("c", 36)},
		{name: "location name with dots", namespace: "shop", repo: "s3.eu-west-1.example.com-kopia"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if errs := validation.IsDNS1123Subdomain(tc.repo); len(errs) > 0 {
				t.Fatalf("bad test input %q: %v", tc.repo, errs)
			}
			got := KeySecretName(tc.namespace, tc.repo)
			if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
				t.Errorf("KeySecretName(%q, %q) = %q: not a valid Secret name: %v", tc.namespace, tc.repo, got, errs)
			}
			if KeySecretName(tc.namespace, tc.repo) != got {
				t.Error("KeySecretName is not stable")
			}
		})
	}
}
