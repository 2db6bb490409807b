package policy

import "strings"

// CEL reserves the word `namespace`, so no expression can use it as a variable, yet it
// is the name users expect (and the one the design fixes). Before parsing, each
// standalone `namespace` identifier is renamed to nsIdent, which has the same length,
// so that line and column numbers and the caret in compiler messages stay right; the
// messages are renamed back. Field selections (pod.metadata.namespace), string
// literals and comments are left alone.
const nsIdent = "ns_object"

func renameNamespace(expr string) string {
	if !strings.Contains(expr, "namespace") {
		return expr
	}
	b := []byte(expr)
	prev := byte(0) // last non-space byte outside literals and comments
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == '/' && i+1 < len(b) && b[i+1] == '/':
			for i < len(b) && b[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'':
			i = skipString(b, i, false)
			prev = c
		case isIdentStart(c):
			j := i
			for j < len(b) && isIdentPart(b[j]) {
				j++
			}
			tok := string(b[i:j])
			if j < len(b) && (b[j] == '"' || b[j] == '\'') && isStringPrefix(tok) {
				i = skipString(b, j, strings.ContainsAny(tok, "rR"))
				prev = '"'
				continue
			}
			if tok == "namespace" && prev != '.' {
				copy(b[i:j], nsIdent)
			}
			prev = 'a'
			i = j
		case c >= '0' && c <= '9':
			for i < len(b) && (isIdentPart(b[i]) || b[i] == '.') {
				i++
			}
			prev = '0'
		default:
			if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
				prev = c
			}
			i++
		}
	}
	return string(b)
}

// restoreNamespace undoes renameNamespace in a compiler message.
func restoreNamespace(msg string) string {
	return strings.ReplaceAll(msg, nsIdent, "namespace")
}

// skipString returns the index after the string literal whose opening quote is at i.
func skipString(b []byte, i int, raw bool) int {
	q := b[i]
	triple := i+2 < len(b) && b[i+1] == q && b[i+2] == q
	if triple {
		i += 3
	} else {
		i++
	}
	for i < len(b) {
		switch {
		case b[i] == '\\' && !raw:
			i += 2
		case triple && b[i] == q && i+2 < len(b) && b[i+1] == q && b[i+2] == q:
			return i + 3
		case !triple && b[i] == q:
			return i + 1
		case !triple && b[i] == '\n':
			return i // unterminated; let the parser report it
		default:
			i++
		}
	}
	return len(b)
}

func isStringPrefix(tok string) bool {
	switch strings.ToLower(tok) {
	case "r", "b", "rb", "br":
		return true
	}
	return false
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentPart(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }
