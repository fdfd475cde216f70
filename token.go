package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"nbchat/loop"
)

// authSecretEnv holds the token secret when -auth-secret / -secret is not
// given, so that it need not appear on a command line (visible in ps).
const authSecretEnv = "NBCHAT_AUTH_SECRET"

// runToken implements "nbchat token": it prints a signed token for the
// server's -auth-secret, for testing and for a backend that issues them.
func runToken(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("nbchat token", flag.ContinueOnError)
	sub := fs.String("sub", "", "the name the token grants (required)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	rooms := fs.String("rooms", "", "comma-separated rooms the token may join (default: any)")
	secret := fs.String("secret", "", "signing secret, at least 32 bytes (default: $"+authSecretEnv+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token: unexpected arguments %q", fs.Args())
	}
	if *secret == "" {
		*secret = os.Getenv(authSecretEnv)
	}
	if *secret == "" {
		return errors.New("token: no secret: use -secret or $" + authSecretEnv)
	}
	var roomList []string
	if *rooms != "" {
		roomList = strings.Split(*rooms, ",")
	}
	tok, err := loop.IssueToken([]byte(*secret), *sub, *ttl, roomList)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}
