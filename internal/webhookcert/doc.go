// Package webhookcert gives the manager's admission webhooks a serving certificate
// without cert-manager: it issues a self-signed CA and a certificate for the webhook
// Service, keeps them in a Secret of the operator namespace, rotates them before they
// expire and writes the CA into the caBundle of Holdfast's webhook configurations.
package webhookcert
