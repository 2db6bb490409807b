package webhookcert

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// apiServerLag is how far behind the newest caBundle a kube-apiserver may be: each one
// reads webhook configurations through its own informer, and with several API servers
// some see a patch later than others. The rotator's CA overlap (DefaultCAOverlap) must
// be at least this long; TestOverlapCoversTheAPIServerLag holds it to that.
const apiServerLag = time.Hour

// bundleView is the caBundle of every webhook, as stored after one step.
type bundleView struct {
	at      time.Time
	bundles [][]byte
}

// apiServerViews returns every caBundle some API server may still use at t: the one
// current at t-lag and every later one up to t.
func apiServerViews(history []bundleView, t time.Time, lag time.Duration) [][]byte {
	var out [][]byte
	for i, v := range history {
		if v.at.After(t) {
			break
		}
		last := i == len(history)-1 || history[i+1].at.After(t.Add(-lag))
		if !v.at.Before(t.Add(-lag)) || last {
			out = append(out, v.bundles...)
		}
	}
	return out
}

// chainsTo says whether leaf, served at t, verifies against caBundle as an API server
// calling the webhook Service would verify it.
func chainsTo(leaf *x509.Certificate, caBundle []byte, t time.Time, dnsName string) error {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caBundle) {
		return fmt.Errorf("the caBundle holds no certificate")
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: t, DNSName: dnsName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

func served(t *testing.T, r *Rotator) *x509.Certificate {
	t.Helper()
	pair, err := r.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// steppedClock is a clock only the test moves.
type steppedClock struct{ now time.Time }

func (c *steppedClock) Now() time.Time { return c.now }

// Seven years of a two-replica manager with the default timings, through several
// serving-certificate renewals and at least one CA renewal. After every check of every
// replica, the certificate each replica serves must verify against every caBundle an API
// server may still hold (any bundle stored within apiServerLag). A leaf renewal must
// not change the caBundle at all; a CA renewal must add the new CA first and switch the
// served certificate to it only later, and must finish within a day.
func TestRotationNeverOutrunsTheAPIServers(t *testing.T) {
	f := newFixture(t)
	clk := &steppedClock{now: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	ctx := t.Context()
	newReplica := func() *Rotator {
		opts := f.options(clk.Now)
		r, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := newReplica(), newReplica()
	log := testr.New(t)
	dnsName := DefaultServiceName + "." + f.namespace + ".svc"

	var history []bundleView
	end := clk.now.Add(7 * 365 * 24 * time.Hour)
	var fineUntil time.Time
	leafRenewals, caRenewals := 0, 0
	var pendingCA *x509.Certificate // a CA added to the bundle that no replica serves yet
	var pendingSince time.Time
	prevLeaf := map[*Rotator]*x509.Certificate{}
	var prevBundle []byte
	for step := 0; clk.now.Before(end); step++ {
		// Replica a checks at every step; replica b only at every fifth, so it serves a
		// certificate a has replaced for a while.
		replicas := []*Rotator{a}
		if step%5 == 0 {
			replicas = append(replicas, b)
		}
		for _, r := range replicas {
			if err := r.sync(ctx, log); err != nil {
				t.Fatalf("%s: sync: %v", clk.now.Format(time.RFC3339), err)
			}
		}
		bundles := f.caBundles()
		history = append(history, bundleView{at: clk.now, bundles: bundles})
		changed := prevBundle != nil && !bytes.Equal(prevBundle, bundles[0])

		for name, r := range map[string]*Rotator{"a": a, "b": b} {
			if r.cert == nil {
				continue // b before its first check
			}
			leaf := served(t, r)
			for _, view := range apiServerViews(history, clk.now, apiServerLag) {
				if err := chainsTo(leaf, view, clk.now, dnsName); err != nil {
					t.Fatalf("%s: replica %s serves certificate %s, which an API server holding a caBundle from the last %s rejects: %v",
						clk.now.Format(time.RFC3339), name, leaf.SerialNumber, apiServerLag, err)
				}
			}
			if prev := prevLeaf[r]; prev != nil && !prev.Equal(leaf) {
				changed = true
				if name == "a" {
					if bytes.Equal(prev.RawIssuer, leaf.RawIssuer) && bytes.Equal(prev.AuthorityKeyId, leaf.AuthorityKeyId) {
						leafRenewals++
						if !bytes.Equal(prevBundle, bundles[0]) {
							t.Fatalf("%s: the serving certificate was renewed with the same CA, yet the caBundle changed", clk.now.Format(time.RFC3339))
						}
					} else if pendingCA != nil && chainsTo(leaf, pemOf(pendingCA), clk.now, dnsName) == nil {
						caRenewals++
						pendingCA = nil
					}
				}
			}
			prevLeaf[r] = leaf
		}

		// A CA that appears in the bundle must be served within a day.
		if prevBundle != nil && pendingCA == nil {
			for _, ca := range parseCerts(bundles[0]) {
				if !bytes.Contains(prevBundle, pemOf(ca)) {
					pendingCA, pendingSince = ca, clk.now
				}
			}
		}
		if pendingCA != nil && clk.now.Sub(pendingSince) > 24*time.Hour {
			t.Fatalf("%s: the CA added at %s is still not served a day later", clk.now.Format(time.RFC3339), pendingSince.Format(time.RFC3339))
		}
		prevBundle = bundles[0]

		// Checks every two minutes for a while after anything changed, otherwise every
		// ten days (a late check, as after the manager was down, must keep the rule too).
		if changed {
			fineUntil = clk.now.Add(2 * apiServerLag)
		}
		if clk.now.Before(fineUntil) || pendingCA != nil {
			clk.now = clk.now.Add(2 * time.Minute)
		} else {
			clk.now = clk.now.Add(10 * 24 * time.Hour)
		}
	}
	if leafRenewals < 2 || caRenewals < 1 {
		t.Errorf("seven years saw %d serving-certificate renewals with the same CA and %d CA renewals; want at least 2 and 1", leafRenewals, caRenewals)
	}
}

// Renewing the serving certificate keeps the CA: the caBundle the API servers hold does
// not change, so there is nothing for them to catch up with.
func TestLeafRenewalKeepsTheCABundle(t *testing.T) {
	f := newFixture(t)
	clk := &steppedClock{now: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	r, err := New(f.options(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	log := testr.New(t)
	if err := r.sync(t.Context(), log); err != nil {
		t.Fatal(err)
	}
	before, leafBefore := f.caBundles()[0], served(t, r)

	clk.now = clk.now.Add(DefaultValidity - DefaultRotateBefore + time.Hour)
	if err := r.sync(t.Context(), log); err != nil {
		t.Fatal(err)
	}
	leafAfter := served(t, r)
	if leafAfter.Equal(leafBefore) {
		t.Fatal("the serving certificate was not renewed in its rotation window")
	}
	for i, got := range f.caBundles() {
		if !bytes.Equal(got, before) {
			t.Errorf("webhook %d: the caBundle changed when only the serving certificate needed renewing", i)
		}
	}
	if err := chainsTo(leafAfter, before, clk.now, DefaultServiceName+"."+f.namespace+".svc"); err != nil {
		t.Errorf("the renewed serving certificate does not chain to the CA the API servers already trust: %v", err)
	}
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
