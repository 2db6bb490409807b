// Package webhookcert gives the manager's admission webhooks a serving certificate
// without cert-manager: it keeps a self-signed CA and a certificate it signs in a Secret
// of the operator namespace, writes the CA into the caBundle of Holdfast's webhook
// configurations, renews the certificate with the same CA, and renews the CA with an
// overlap, so that no API server ever sees a certificate its caBundle does not trust.
package webhookcert
