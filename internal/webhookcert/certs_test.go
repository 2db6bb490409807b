package webhookcert

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

var testTimings = timings{
	validity: 100 * 24 * time.Hour, rotateBefore: 10 * 24 * time.Hour,
	caValidity: 1000 * 24 * time.Hour, caRotateBefore: 100 * 24 * time.Hour, caOverlap: time.Hour,
}

// fresh is what a first start writes at now.
func fresh(t *testing.T, now time.Time) bundle {
	t.Helper()
	b, reason, err := bundle{}.next("svc", "ns", now, testTimings)
	if err != nil || reason == "" {
		t.Fatalf("next of an empty Secret = %q, %v; want a new CA and certificate", reason, err)
	}
	return b
}

func TestCheckLeaf(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	good, other := fresh(t, now), fresh(t, now)
	for _, tc := range []struct {
		name      string
		b         bundle
		service   string
		at        time.Duration
		wantError string
	}{
		{name: "valid", b: good, service: "svc"},
		{name: "valid in its last hour", b: good, service: "svc", at: 100*24*time.Hour - time.Hour},
		{name: "other service", b: good, service: "other", wantError: "not other.ns.svc"},
		{name: "expired", b: good, service: "svc", at: 100 * 24 * time.Hour, wantError: "expired at"},
		{name: "not valid yet", b: good, service: "svc", at: -2 * time.Hour, wantError: "valid only from"},
		{name: "signed by another CA", b: bundle{certPEM: good.certPEM, keyPEM: good.keyPEM, caPEM: other.caPEM}, service: "svc", wantError: "unknown authority"},
		{name: "signed by the second CA of the bundle", b: bundle{certPEM: good.certPEM, keyPEM: good.keyPEM, caPEM: append(bytes.Clone(other.caPEM), good.caPEM...)}, service: "svc", wantError: "unknown authority"},
		{name: "key of another certificate", b: bundle{certPEM: good.certPEM, keyPEM: other.keyPEM, caPEM: good.caPEM}, service: "svc", wantError: "private key does not match"},
		{name: "empty", b: bundle{}, service: "svc", wantError: "lacks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.b.checkLeaf(tc.service, "ns", now.Add(tc.at))
			if tc.wantError == "" {
				if err != nil {
					t.Fatalf("checkLeaf: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, errUnusable) || !strings.Contains(err.Error(), tc.wantError) {
				t.Fatalf("checkLeaf = %v, want errUnusable containing %q", err, tc.wantError)
			}
		})
	}
}

// Each decision of next, one step at a time, through a serving-certificate renewal and
// a CA renewal.
func TestNextSteps(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	first := fresh(t, t0)
	ca0 := parseCerts(first.caPEM)

	step := func(b bundle, at time.Time, wantChange string) bundle {
		t.Helper()
		got, reason, err := b.next("svc", "ns", at, testTimings)
		if err != nil {
			t.Fatal(err)
		}
		if (reason != "") != (wantChange != "") || !strings.Contains(reason, wantChange) {
			t.Fatalf("at %s: next changed %q, want %q", stamp(at), reason, wantChange)
		}
		if _, err := got.checkLeaf("svc", "ns", at); err != nil {
			t.Fatalf("at %s: the result cannot be served: %v", stamp(at), err)
		}
		return got
	}

	// Settled: nothing to do.
	step(first, t0.Add(day), "")

	// The serving certificate's rotation window: a new leaf, the same CA and bundle.
	renewed := step(first, t0.Add(91*day), "signing a new one with the same CA")
	if !bytes.Equal(renewed.caPEM, first.caPEM) || !bytes.Equal(renewed.caKeyPEM, first.caKeyPEM) {
		t.Fatal("a serving-certificate renewal changed the CA")
	}
	if bytes.Equal(renewed.certPEM, first.certPEM) {
		t.Fatal("the serving certificate was not renewed")
	}

	// The CA's rotation window: the successor joins the bundle, the leaf stays.
	caDue := t0.Add(901 * day)
	var b bundle
	due := func() time.Time { return renewed.leaf().NotAfter.Add(-testTimings.rotateBefore) }
	for at := due(); at.Before(caDue); at = due() {
		renewed = step(renewed, at, "same CA")
	}
	b = step(renewed, caDue, "adding its successor")
	if !bytes.Equal(b.certPEM, renewed.certPEM) {
		t.Fatal("the served certificate changed when the CA renewal began")
	}
	cas := parseCerts(b.caPEM)
	next := parseCerts(b.nextCAPEM)
	if len(cas) != 2 || !cas[0].Equal(ca0[0]) || len(next) != 1 || !cas[1].Equal(next[0]) {
		t.Fatalf("bundle during the CA renewal holds %d CAs; want the current one first, then the successor", len(cas))
	}

	// Not yet recorded as trusted by the caBundles: however long, no switch.
	step(b, caDue.Add(2*day), "")
	// Recorded; the overlap runs.
	b.nextTrustedSince = caDue.Add(time.Minute)
	step(b, caDue.Add(time.Minute+testTimings.caOverlap-time.Second), "")
	// The overlap is over: the successor signs, the old CA stays trusted.
	switched := step(b, caDue.Add(time.Minute+testTimings.caOverlap), "every caBundle has trusted the next CA")
	cas = parseCerts(switched.caPEM)
	if len(cas) != 2 || !cas[0].Equal(next[0]) || !cas[1].Equal(ca0[0]) {
		t.Fatal("after the switch the bundle is not the new CA first, then the old one")
	}
	if len(switched.nextCAPEM) != 0 || !switched.nextTrustedSince.IsZero() {
		t.Fatal("the successor is still recorded as pending after the switch")
	}
	if err := chainsTo(switched.leaf(), encodeCert(next[0]), caDue.Add(2*time.Hour), "svc.ns.svc"); err != nil {
		t.Fatalf("the served certificate after the switch is not signed by the new CA: %v", err)
	}

	// Still there the day before the old CA expires, gone once it has.
	switched = step(switched, ca0[0].NotAfter.Add(-day), "same CA")
	if cas := parseCerts(switched.caPEM); len(cas) != 2 {
		t.Fatalf("the bundle the day before the old CA expires holds %d CAs, want 2", len(cas))
	}
	dropped := step(switched, ca0[0].NotAfter, "dropping expired")
	if cas := parseCerts(dropped.caPEM); len(cas) != 1 || !cas[0].Equal(next[0]) {
		t.Fatalf("the bundle after the old CA expired holds %d CAs, want the new one only", len(cas))
	}
}

// A Secret written before the CA key was stored: its certificate keeps being served
// while a new CA, whose key is kept, goes through the overlap like any CA renewal.
func TestNextMigratesASecretWithoutCAKey(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	old := fresh(t, t0)
	old.caKeyPEM = nil
	b, reason, err := old.next("svc", "ns", t0.Add(time.Hour), testTimings)
	if err != nil || !strings.Contains(reason, "adding its successor") {
		t.Fatalf("next = %q, %v; want a successor CA", reason, err)
	}
	if !bytes.Equal(b.certPEM, old.certPEM) {
		t.Fatal("the served certificate changed at once")
	}
	// An expired certificate without a CA key has nothing to keep: start over at once.
	b, reason, err = old.next("svc", "ns", t0.Add(101*24*time.Hour), testTimings)
	if err != nil || !strings.Contains(reason, "issuing a new CA") {
		t.Fatalf("next = %q, %v; want a new CA and certificate", reason, err)
	}
	if _, err := b.checkLeaf("svc", "ns", t0.Add(101*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
}

// The Rotator's CA overlap covers the API-server lag the window tests simulate.
func TestOverlapCoversTheAPIServerLag(t *testing.T) {
	if DefaultCAOverlap < apiServerLag {
		t.Fatalf("DefaultCAOverlap %s is shorter than the API-server lag the tests allow for, %s", DefaultCAOverlap, apiServerLag)
	}
}
