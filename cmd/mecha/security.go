package main

import (
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"

	"mecha/runtime/clustertls"
)

const caUsage = `Usage:
  mecha ca create --dir DIR [--name NAME]
      makes a cluster CA: DIR/ca.crt (give it to every runtime as --tls-ca)
      and DIR/ca.key (keep it with the operator; it signs members)
  mecha ca issue --dir DIR --name MEMBER [--out OUTDIR]
      signs a member certificate: OUTDIR/MEMBER.crt and OUTDIR/MEMBER.key,
      for that runtime's --tls-cert and --tls-key

Runtimes started with --tls-ca, --tls-cert and --tls-key take calls on
their internal port only from runtimes holding a certificate of the same
CA, and call others only if they hold one too.
`

// caCmd makes the cluster CA and member certificates.
func caCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "create" && args[0] != "issue") {
		fmt.Fprint(stderr, caUsage)
		return 2
	}
	fs := flag.NewFlagSet("mecha ca "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "the CA's folder")
	name := fs.String("name", "", "the CA's name (create) or the member's (issue)")
	out := fs.String("out", "", "where issue writes the member's files (default: the CA's folder)")
	if code, ok := parseFlags(fs, args[1:], stderr); !ok {
		return code
	}
	if *dir == "" {
		fmt.Fprintln(stderr, "mecha ca: --dir is required")
		return 2
	}
	switch args[0] {
	case "create":
		if *name == "" {
			*name = "mecha cluster CA"
		}
		if err := clustertls.CreateCA(*dir, *name); err != nil {
			fmt.Fprintf(stderr, "mecha ca create: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "cluster CA written: %s/%s (for every runtime's --tls-ca) and %s/%s (keep it safe)\n", *dir, clustertls.CACert, *dir, clustertls.CAKey)
	case "issue":
		if *name == "" {
			fmt.Fprintln(stderr, "mecha ca issue: --name is required (the member's name)")
			return 2
		}
		if *out == "" {
			*out = *dir
		}
		cert, key, err := clustertls.Issue(*dir, *name, *out)
		if err != nil {
			fmt.Fprintf(stderr, "mecha ca issue: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "member certificate written: --tls-cert %s --tls-key %s\n", cert, key)
	}
	return 0
}

// keygenCmd prints a new gossip key: the secret that encrypts gossip
// and authenticates the internal port (--gossip-key).
func keygenCmd(stdout io.Writer) int {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(b))
	return 0
}
