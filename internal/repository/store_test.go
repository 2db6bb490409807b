package repository

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

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
		// want, if set, is the exact name: names that were valid before keep it.
		want string
	}{
		{name: "short", namespace: "shop", repo: "minio-kopia", want: "repository-key-shop-minio-kopia"},
		{name: "exactly 253 characters is not cut", namespace: "shop", repo: strings.Repeat("a", 253-len("repository-key-shop-")),
			want: "repository-key-shop-" + strings.Repeat("a", 253-len("repository-key-shop-"))},
		{name: "name of 253 characters", namespace: "shop", repo: strings.Repeat("a", 253)},
		{name: "longest namespace and name", namespace: ns63, repo: strings.Repeat("b", 253)},
		{name: "cut lands on a dot", namespace: "shop", repo: nameCutAt("shop", '.')},
		{name: "cut lands on a dot, longest namespace", namespace: ns63, repo: nameCutAt(ns63, '.')},
		{name: "cut lands on a dot in a location name with dots", namespace: "shop",
			repo: strings.Repeat("x", 253-17-len("repository-key-shop-")-len("s3.")) + "s3.eu-west-1.example.com-kopia"},
		{name: "cut lands on a dash", namespace: "shop", repo: nameCutAt("shop", '-'),
			want: oldKeySecretName("shop", nameCutAt("shop", '-'))},
		{name: "cut lands just after a dot", namespace: "shop", repo: nameCutAt("shop", 'a')[:216] + "." + strings.Repeat("c", 36),
			want: oldKeySecretName("shop", nameCutAt("shop", 'a')[:216]+"."+strings.Repeat("c", 36))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if errs := validation.IsDNS1123Subdomain(tc.repo); len(errs) > 0 {
				t.Fatalf("bad test input %q: %v", tc.repo, errs)
			}
			got := KeySecretName(tc.namespace, tc.repo)
			if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
				t.Errorf("KeySecretName(%q, %q) = %q: not a valid Secret name: %v", tc.namespace, tc.repo, got, errs)
			}
			if tc.want != "" && got != tc.want {
				t.Errorf("KeySecretName(%q, %q) = %q, want %q (a name that was valid keeps its name)", tc.namespace, tc.repo, got, tc.want)
			}
			if KeySecretName(tc.namespace, tc.repo) != got {
				t.Error("KeySecretName is not stable")
			}
		})
	}
}

// oldKeySecretName is the scheme before names cut at a dot were fixed; every name it
// gave that was valid must stay the same, or an existing repository would lose its key.
func oldKeySecretName(namespace, name string) string {
	n := "repository-key-" + namespace + "-" + name
	if len(n) <= 253 {
		return n
	}
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	return n[:253-17] + "-" + hex.EncodeToString(sum[:8])
}
