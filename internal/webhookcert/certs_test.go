package webhookcert

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	good, err := issue("svc", "ns", now, 100*24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := issue("svc", "ns", now, 100*24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		b         bundle
		service   string
		at        time.Duration
		rotate    time.Duration
		wantError string
	}{
		{name: "valid", b: good, service: "svc", rotate: 10 * 24 * time.Hour},
		{name: "other service", b: good, service: "other", rotate: time.Hour, wantError: "not other.ns.svc"},
		{name: "in the rotation window", b: good, service: "svc", at: 95 * 24 * time.Hour, rotate: 10 * 24 * time.Hour, wantError: "within the rotation window"},
		{name: "not valid yet", b: good, service: "svc", at: -2 * time.Hour, rotate: time.Hour, wantError: "valid only from"},
		{name: "signed by another CA", b: bundle{certPEM: good.certPEM, keyPEM: good.keyPEM, caPEM: other.caPEM}, service: "svc", rotate: time.Hour, wantError: "unknown authority"},
		{name: "key of another certificate", b: bundle{certPEM: good.certPEM, keyPEM: other.keyPEM, caPEM: good.caPEM}, service: "svc", rotate: time.Hour, wantError: "private key does not match"},
		{name: "empty", b: bundle{}, service: "svc", rotate: time.Hour, wantError: "lacks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.b.check(tc.service, "ns", now.Add(tc.at), tc.rotate)
			if tc.wantError == "" {
				if err != nil {
					t.Fatalf("check: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, errRotate) || !strings.Contains(err.Error(), tc.wantError) {
				t.Fatalf("check = %v, want errRotate containing %q", err, tc.wantError)
			}
		})
	}
}

// A rotation keeps the previous CA in the bundle while it is valid, and only one.
func TestIssueKeepsPreviousCA(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	first, _ := issue("svc", "ns", now, 10*24*time.Hour, nil)
	second, _ := issue("svc", "ns", now.Add(8*24*time.Hour), 10*24*time.Hour, first.caPEM)
	if n := len(parseCerts(second.caPEM)); n != 2 {
		t.Fatalf("bundle after one rotation holds %d CAs, want 2", n)
	}
	third, _ := issue("svc", "ns", now.Add(16*24*time.Hour), 10*24*time.Hour, second.caPEM)
	if n := len(parseCerts(third.caPEM)); n != 2 {
		t.Fatalf("bundle after two rotations holds %d CAs, want 2 (the first has expired)", n)
	}
	if parseCerts(third.caPEM)[1].Equal(parseCerts(first.caPEM)[0]) {
		t.Fatal("the expired first CA is still trusted")
	}
}
