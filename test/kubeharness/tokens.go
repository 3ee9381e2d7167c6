package kubeharness

import (
	"bytes"
	"crypto/rand"
	"encoding/csv"
	"fmt"
	"path/filepath"
	"strings"
)

// TokenUser is one line of the apiserver's static token file.
type TokenUser struct {
	Token  string
	Name   string
	UID    string
	Groups []string
}

func (p *PKI) createTokens() error {
	p.TokenFile = filepath.Join(p.Dir, "tokens.csv")

	var err error

	p.Admin, err = p.AddTokenUser(TokenUser{Name: "extractedprism-admin", Groups: []string{"system:masters"}})
	if err != nil {
		return err
	}

	// The group the shipped host-mode RoleBinding names.
	p.Node, err = p.AddTokenUser(TokenUser{Name: "extractedprism-node", Groups: []string{"extractedprism:nodes"}})

	return err
}

// AddTokenUser adds u to the token file, generating its Token and UID when
// empty, and returns the completed user. kube-apiserver reads the file only
// at start-up, so add users before StartAPIServer (or Restart afterwards).
func (p *PKI) AddTokenUser(u TokenUser) (TokenUser, error) {
	if u.Name == "" {
		return TokenUser{}, fmt.Errorf("add token user: empty name")
	}

	if u.Token == "" {
		u.Token = rand.Text()
	}

	if u.UID == "" {
		u.UID = u.Name + "-uid"
	}

	p.mu.Lock()
	defer p.mu.Unlock()

	p.tokens = append(p.tokens, u)

	data, err := encodeTokens(p.tokens)
	if err != nil {
		return TokenUser{}, err
	}

	if err := writeFile(p.TokenFile, data); err != nil {
		return TokenUser{}, fmt.Errorf("add token user %s: %w", u.Name, err)
	}

	return u, nil
}

// encodeTokens writes token,user,uid,"group1,group2" lines; encoding/csv does
// the quoting the apiserver's CSV reader expects.
func encodeTokens(users []TokenUser) ([]byte, error) {
	var buf bytes.Buffer

	w := csv.NewWriter(&buf)
	for _, u := range users {
		if err := w.Write([]string{u.Token, u.Name, u.UID, strings.Join(u.Groups, ",")}); err != nil {
			return nil, fmt.Errorf("encode token file: %w", err)
		}
	}

	w.Flush()

	if err := w.Error(); err != nil {
		return nil, fmt.Errorf("encode token file: %w", err)
	}

	return buf.Bytes(), nil
}
