// Package e2e drives the chat page in a real (headless) Chromium against a
// real nbchat server binary.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

const chromiumPath = "/usr/bin/chromium"

var (
	// setupErr is why the suite cannot run (set in TestMain, reported per test).
	setupErr  error
	skipSuite string // non-empty: skip every test with this reason

	srv        *server
	browserCtx context.Context // one browser; every session gets its own browser context
)

// ---------------------------------------------------------------------------
// Suite setup: build the server once, start it, start one headless browser.

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			setupErr = fmt.Errorf("CI=true but %s is missing: %v", chromiumPath, err)
		} else {
			skipSuite = chromiumPath + " not installed (apt-get install chromium); set CI=true to make this a failure"
		}
		return m.Run()
	}

	tmp, err := os.MkdirTemp("", "nbchat-e2e-")
	if err != nil {
		setupErr = err
		return m.Run()
	}
	defer os.RemoveAll(tmp)

	bin := os.Getenv("NBCHAT_BIN") // use a prebuilt server instead of building one
	if bin == "" {
		bin = filepath.Join(tmp, "nbchat")
		build := exec.Command("go", "build", "-o", bin, "..")
		if out, err := build.CombinedOutput(); err != nil {
			setupErr = fmt.Errorf("go build -o %s ..: %v\n%s", bin, err, out)
			return m.Run()
		}
	}

	port, err := freePort()
	if err != nil {
		setupErr = err
		return m.Run()
	}
	srv = &server{bin: bin, addr: fmt.Sprintf("127.0.0.1:%d", port), logPath: filepath.Join(tmp, "server.log")}
	// History in memory only, so a restart forgets rooms and the page must
	// cope with seqs starting over (a server without -data has nothing else).
	if help, _ := exec.Command(bin, "-h").CombinedOutput(); bytes.Contains(help, []byte("\n  -data ")) {
		srv.args = []string{"-data", ""}
	}
	if err := srv.start(); err != nil {
		setupErr = err
		srv.dumpLog()
		return m.Run()
	}
	defer srv.stop()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.WindowSize(1280, 800),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	if err := chromedp.Run(bctx); err != nil { // starts the browser
		setupErr = fmt.Errorf("start chromium: %w", err)
		return m.Run()
	}
	browserCtx = bctx

	code := m.Run()
	if code != 0 {
		srv.dumpLog()
	}
	return code
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// requireSuite skips or fails a test when the suite could not be set up.
func requireSuite(t *testing.T) {
	t.Helper()
	if skipSuite != "" {
		t.Skip(skipSuite)
	}
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

// ---------------------------------------------------------------------------
// The server process.

type server struct {
	bin, addr, logPath string
	args               []string // extra flags
	cmd                *exec.Cmd
	done               chan error
}

func (s *server) url() string { return "http://" + s.addr + "/" }

func (s *server) start() error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, append([]string{"-addr", s.addr}, s.args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	s.cmd = cmd
	s.done = make(chan error, 1)
	go func() { s.done <- cmd.Wait(); logf.Close() }()

	// Wait for /healthz; a restarted server may need a moment to get the port back.
	deadline := time.Now().Add(15 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("server exited during startup: %v", err)
		default:
		}
		res, err := client.Get("http://" + s.addr + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.kill()
	return fmt.Errorf("server at %s: /healthz not OK within 15s", s.addr)
}

// stop sends SIGTERM and waits for a clean exit (SIGKILL after 10 s).
func (s *server) stop() error {
	if s.cmd == nil {
		return nil
	}
	defer func() { s.cmd = nil }()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		return err
	case <-time.After(10 * time.Second):
		s.kill()
		return errors.New("server did not exit within 10s of SIGTERM")
	}
}

func (s *server) kill() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		<-s.done
		s.cmd = nil
	}
}

// startNode starts a server of its own for one test, with flags args, and
// stops it when the test ends.
func startNode(t *testing.T, args ...string) *server {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	n := &server{bin: srv.bin, addr: fmt.Sprintf("127.0.0.1:%d", port),
		logPath: filepath.Join(t.TempDir(), "server.log"), args: args}
	if err := n.start(); err != nil {
		n.dumpLog()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.stop() })
	return n
}

func (s *server) dumpLog() {
	b, err := os.ReadFile(s.logPath)
	if err != nil || len(b) == 0 {
		return
	}
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	fmt.Fprintf(os.Stderr, "---- server log (tail) ----\n%s\n---- end of server log ----\n", b)
}

// ---------------------------------------------------------------------------
// Browser sessions: one browser context (own cookies/storage) per user.

type session struct {
	t     *testing.T
	label string
	ctx   context.Context
	close context.CancelFunc
	bcID  cdp.BrowserContextID
}

const waitTimeout = 10 * time.Second

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

func newSession(t *testing.T, label string, width, height int64) *session {
	t.Helper()
	return newSessionAt(t, label, width, height, srv.url())
}

// newSessionAt opens the page at url in a new session.
func newSessionAt(t *testing.T, label string, width, height int64, url string) *session {
	t.Helper()
	// A fresh browser context (like an incognito profile) per session, with
	// its tab in a new window: chromedp's own WithNewBrowserContext opens the
	// tab without a window, which headless Chromium 15x refuses ("no browser
	// is open").
	bexec := cdp.WithExecutor(browserCtx, chromedp.FromContext(browserCtx).Browser)
	bcID, err := target.CreateBrowserContext().WithDisposeOnDetach(true).Do(bexec)
	if err != nil {
		t.Fatalf("%s: create browser context: %v", label, err)
	}
	return openTab(t, label, width, height, url, bcID, true)
}

// newTab opens url in another tab of s's browser context: the two share
// storage, as two tabs of one browser do.
func (s *session) newTab(label string, width, height int64, url string) *session {
	s.t.Helper()
	return openTab(s.t, label, width, height, url, s.bcID, false)
}

// openTab opens url in a new tab of the browser context bcID, which it
// disposes of when the tab closes if owner.
func openTab(t *testing.T, label string, width, height int64, url string, bcID cdp.BrowserContextID, owner bool) *session {
	t.Helper()
	bexec := cdp.WithExecutor(browserCtx, chromedp.FromContext(browserCtx).Browser)
	tid, err := target.CreateTarget("about:blank").WithBrowserContextID(bcID).WithNewWindow(true).Do(bexec)
	if err != nil {
		t.Fatalf("%s: create tab: %v", label, err)
	}
	ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithTargetID(tid))
	s := &session{t: t, label: label, ctx: ctx, bcID: bcID}
	s.close = func() {
		cancel()
		ctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		bexec := cdp.WithExecutor(ctx, chromedp.FromContext(browserCtx).Browser)
		_ = target.CloseTarget(tid).Do(bexec)
		if owner {
			_ = target.DisposeBrowserContext(bcID).Do(bexec)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			s.saveFailureShot()
		}
		s.close()
	})
	// Attach with the session's own context: chromedp ties the tab's lifetime
	// to the context of the first Run, so it must not be a short-lived one.
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("%s: attach: %v", label, err)
	}
	s.run(chromedp.EmulateViewport(width, height), chromedp.Navigate(url),
		chromedp.WaitVisible(`#name-input`, chromedp.ByID))
	return s
}

func (s *session) saveFailureShot() {
	dir := filepath.Join("testdata", "failures")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.t.Log(err)
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	var buf []byte
	if err := chromedp.Run(ctx, chromedp.CaptureScreenshot(&buf)); err != nil {
		s.t.Logf("%s: failure screenshot: %v", s.label, err)
		return
	}
	name := unsafeChars.ReplaceAllString(s.t.Name()+"-"+s.label, "_") + ".png"
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, buf, 0o644); err == nil {
		s.t.Logf("%s: screenshot saved to e2e/%s", s.label, p)
	}
}

func (s *session) run(actions ...chromedp.Action) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 3*waitTimeout)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		s.t.Fatalf("%s: %v", s.label, err)
	}
}

// waitJS waits until the JavaScript expression is truthy.
func (s *session) waitJS(what, expr string) {
	s.t.Helper()
	s.waitJSFor(what, expr, waitTimeout)
}

// waitJSFor is waitJS with its own timeout.
func (s *session) waitJSFor(what, expr string, d time.Duration) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, d+2*time.Second)
	defer cancel()
	var ok bool
	err := chromedp.Run(ctx, chromedp.Poll(expr, &ok,
		chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(d)))
	if err != nil {
		s.t.Fatalf("%s: waiting for %s (%s): %v", s.label, what, expr, err)
	}
}

func (s *session) eval(expr string, res any) {
	s.t.Helper()
	s.run(chromedp.Evaluate(expr, res))
}

func (s *session) state() string {
	s.t.Helper()
	var st string
	s.eval(`window.nbchat.state()`, &st)
	return st
}

func (s *session) login(name string) {
	s.t.Helper()
	s.run(chromedp.SetValue(`#name-input`, name, chromedp.ByID), chromedp.Click(`#login-button`, chromedp.ByID))
	s.waitJS("online as "+name, fmt.Sprintf(`window.nbchat.state() === 'online' && window.nbchat.me() === %q`, name))
	s.waitJS("login screen hidden", `document.getElementById('login').hidden`)
}

func (s *session) join(room string) {
	s.t.Helper()
	s.openRoomsDrawer()
	s.run(chromedp.SetValue(`#room-input`, room, chromedp.ByID), chromedp.Click(`#join-button`, chromedp.ByID))
	s.waitJS("joined "+room, fmt.Sprintf(
		`window.nbchat.rooms().some(r => r.name === %q && r.joined) && window.nbchat.active()?.name === %q`, room, room))
}

// openRoomsDrawer opens the rooms panel when it is collapsed (phone width).
func (s *session) openRoomsDrawer() {
	s.t.Helper()
	var hidden bool
	s.eval(`getComputedStyle(document.getElementById('rooms-panel')).display === 'none'`, &hidden)
	if hidden {
		s.run(chromedp.Click(`#toggle-rooms`, chromedp.ByID))
		s.waitJS("rooms drawer open", `getComputedStyle(document.getElementById('rooms-panel')).display !== 'none'`)
	}
}

// say types text into the composer and presses Enter, like a user.
// pressEnter presses Enter as one keyDown carrying its text, the way a real
// keyboard does, so that preventDefault in the page's keydown handler also
// stops the newline (chromedp.KeyEvent sends a separate "char" event that
// would insert it anyway).
func pressEnter(mods input.Modifier) chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		down := input.DispatchKeyEvent(input.KeyDown).WithKey("Enter").WithCode("Enter").
			WithWindowsVirtualKeyCode(13).WithNativeVirtualKeyCode(13).WithText("\r").WithUnmodifiedText("\r").
			WithModifiers(mods)
		if err := down.Do(ctx); err != nil {
			return err
		}
		return input.DispatchKeyEvent(input.KeyUp).WithKey("Enter").WithCode("Enter").
			WithWindowsVirtualKeyCode(13).WithNativeVirtualKeyCode(13).WithModifiers(mods).Do(ctx)
	})
}

func (s *session) say(text string) {
	s.t.Helper()
	s.run(chromedp.SetValue(`#message-input`, text, chromedp.ByID),
		chromedp.Focus(`#message-input`, chromedp.ByID),
		pressEnter(0))
	s.waitJS("composer cleared", `document.getElementById('message-input').value === ''`)
}

// texts returns the texts of the messages in the open conversation.
func (s *session) texts() []string {
	s.t.Helper()
	var out []string
	s.eval(`Array.from(document.querySelectorAll('#messages [data-testid=message] [data-testid=message-text]')).map(e => e.textContent)`, &out)
	return out
}

func (s *session) waitTexts(want ...string) {
	s.t.Helper()
	s.waitJS(fmt.Sprintf("%d messages", len(want)),
		fmt.Sprintf(`document.querySelectorAll('#messages [data-testid=message]').length >= %d`, len(want)))
	if got := s.texts(); !slices.Equal(got, want) {
		s.t.Fatalf("%s: messages = %q, want %q", s.label, got, want)
	}
}

// seqs returns the data-seq of the acknowledged messages in the open conversation.
func (s *session) seqs() []int {
	s.t.Helper()
	var out []int
	s.eval(`Array.from(document.querySelectorAll('#messages [data-testid=message]:not([data-pending])')).map(e => Number(e.dataset.seq))`, &out)
	return out
}

// assertSeqs checks that the open conversation shows seqs from..to, each once,
// in order. It first waits for the page's own messages to be acknowledged:
// a message shows as soon as it is sent, and gets its seq only from the ack.
func (s *session) assertSeqs(from, to int) {
	s.t.Helper()
	s.waitJS("own messages acknowledged", `!document.querySelector('#messages [data-pending]')`)
	got := s.seqs()
	ok := len(got) == to-from+1
	for i := 0; ok && i < len(got); i++ {
		ok = got[i] == from+i
	}
	if !ok {
		s.t.Fatalf("%s: seqs %v, want %d..%d each once in order", s.label, got, from, to)
	}
}

// goOffline breaks the page's connection and keeps it from reconnecting,
// like Wi-Fi dropping; goOnline lets it reconnect at once.
func (s *session) goOffline() {
	s.t.Helper()
	s.eval(`window.nbchat.simulateOffline(), true`, nil)
	s.waitJS("reconnecting", `window.nbchat.state() === 'reconnecting'`)
}

func (s *session) goOnline() {
	s.t.Helper()
	s.eval(`window.nbchat.simulateOnline(), true`, nil)
	s.waitJS("online again", `window.nbchat.state() === 'online' && window.nbchat.rooms().every(r => r.joined)`)
}

func (s *session) members() []string {
	s.t.Helper()
	var out []string
	s.eval(`Array.from(document.querySelectorAll('#member-list [data-testid=member]')).map(e => e.dataset.name)`, &out)
	return out
}

func (s *session) waitMembers(want ...string) {
	s.t.Helper()
	js := fmt.Sprintf(`JSON.stringify(Array.from(document.querySelectorAll('#member-list [data-testid=member]')).map(e => e.dataset.name)) === %q`, jsonList(want))
	ctx, cancel := context.WithTimeout(s.ctx, waitTimeout+2*time.Second)
	defer cancel()
	var ok bool
	if err := chromedp.Run(ctx, chromedp.Poll(js, &ok, chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(waitTimeout))); err != nil {
		s.t.Fatalf("%s: member list = %q, want %q (%v)", s.label, s.members(), want, err)
	}
}

// assertNoHorizontalOverflow checks that nothing sticks out sideways: the
// document, and the header/composer whose overflow the body would clip.
func (s *session) assertNoHorizontalOverflow() {
	s.t.Helper()
	var res struct {
		Doc, Inner int
		Bad        []string
	}
	s.eval(`({
		doc: document.documentElement.scrollWidth,
		inner: window.innerWidth,
		bad: ['header.top', '.conv-head', '.composer', '#messages'].filter(q => {
			const e = document.querySelector(q);
			return e && e.scrollWidth > e.clientWidth + 1;
		}),
	})`, &res)
	if res.Doc > res.Inner || len(res.Bad) > 0 {
		s.t.Fatalf("%s: horizontal overflow: scrollWidth %d, innerWidth %d, overflowing: %v", s.label, res.Doc, res.Inner, res.Bad)
	}
}

func (s *session) screenshot(path string) []byte {
	s.t.Helper()
	var buf []byte
	s.run(chromedp.CaptureScreenshot(&buf))
	if path != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			s.t.Fatal(err)
		}
		if err := os.WriteFile(path, buf, 0o644); err != nil {
			s.t.Fatal(err)
		}
		s.t.Logf("screenshot: %s", path)
	}
	return buf
}

func jsonList(v []string) string {
	q := make([]string, len(v))
	for i, s := range v {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ",") + "]"
}

// runs counts each test's invocations (go test -count=N runs it N times).
var runs = map[string]int{}

// namer returns a function that makes user and room names unique to this
// invocation of t, as the server outlives it: rooms keep their history and a
// name may stay taken a little after its tab closes. The first invocation
// keeps the names as written (the README screenshots show them).
func namer(t *testing.T) func(string) string {
	runs[t.Name()]++
	n := runs[t.Name()]
	return func(name string) string {
		if n == 1 {
			return name
		}
		return fmt.Sprintf("%s-%d", name, n)
	}
}

// ---------------------------------------------------------------------------
// Tests. Each test uses its own user and room names, so a server that frees
// names a little after a tab closes cannot make tests depend on each other.

func TestChatInOrder(t *testing.T) {
	requireSuite(t)
	name := namer(t)
	room := name("lobby")
	alice := newSession(t, "alice", 1280, 800)
	bob := newSession(t, "bob", 1280, 800)
	alice.login(name("alice"))
	bob.login(name("bob"))
	alice.join(room)
	bob.join(room)
	alice.waitMembers(name("alice"), name("bob"))

	alice.say("hello bob")
	bob.waitTexts("hello bob")
	bob.say("hi alice")
	alice.waitTexts("hello bob", "hi alice")
	for i := 1; i <= 5; i++ {
		alice.say(fmt.Sprintf("message %d", i))
	}
	// Shift+Enter makes a new line; Enter sends.
	bob.run(chromedp.SetValue(`#message-input`, "line one", chromedp.ByID),
		chromedp.Focus(`#message-input`, chromedp.ByID),
		chromedp.KeyEvent(kb.End),
		pressEnter(input.ModifierShift),
		chromedp.SendKeys(`#message-input`, "line two", chromedp.ByID),
		pressEnter(0))
	want := []string{"hello bob", "hi alice", "message 1", "message 2", "message 3", "message 4", "message 5", "line one\nline two"}
	alice.waitTexts(want...)
	bob.waitTexts(want...)

	for _, s := range []*session{alice, bob} {
		// seq grows by exactly one per message, and one's own messages are set apart.
		seqs := s.seqs()
		for i := 1; i < len(seqs); i++ {
			if seqs[i] != seqs[i-1]+1 {
				t.Errorf("%s: seqs %v not consecutive", s.label, seqs)
				break
			}
		}
		var own []string
		s.eval(`Array.from(document.querySelectorAll('#messages .msg.own [data-testid=message-text]')).map(e => e.textContent)`, &own)
		wantOwn := 6
		if s == bob {
			wantOwn = 2
		}
		if len(own) != wantOwn {
			t.Errorf("%s: %d own messages %q, want %d", s.label, len(own), own, wantOwn)
		}
		var ws string
		s.eval(`getComputedStyle(document.querySelector('#messages [data-testid=message-text]')).whiteSpace`, &ws)
		if ws != "pre-wrap" {
			t.Errorf("%s: message white-space = %q, want pre-wrap", s.label, ws)
		}
		var tm string
		s.eval(`document.querySelector('#messages [data-testid=message] time').textContent`, &tm)
		if !regexp.MustCompile(`^\d\d:\d\d$`).MatchString(tm) {
			t.Errorf("%s: time %q, want HH:MM", s.label, tm)
		}
	}
}

func TestPrivateMessage(t *testing.T) {
	requireSuite(t)
	name := namer(t)
	room, aliceName, bobName, carolName := name("lobby-pm"), name("alice.pm"), name("bob.pm"), name("carol.pm")
	alice := newSession(t, "alice", 1280, 800)
	bob := newSession(t, "bob", 1280, 800)
	carol := newSession(t, "carol", 1280, 800)
	alice.login(aliceName)
	bob.login(bobName)
	carol.login(carolName)
	for _, s := range []*session{alice, bob, carol} {
		s.join(room)
	}
	alice.waitMembers(aliceName, bobName, carolName)

	// Click bob in the member list: a private conversation opens.
	alice.run(chromedp.Click(`#member-list [data-name="`+bobName+`"] button`, chromedp.ByQuery))
	alice.waitJS("dm open", `window.nbchat.active()?.kind === 'dm' && window.nbchat.active()?.name === '`+bobName+`'`)
	alice.say("psst, secret")
	alice.waitTexts("psst, secret")

	// Bob sees an unread badge, opens the conversation and reads it.
	bob.waitJS("unread dm", `window.nbchat.unread()['@`+aliceName+`'] === 1 && !!document.querySelector('[data-testid=dm-item][data-peer="`+aliceName+`"] .badge')`)
	bob.run(chromedp.Click(`[data-testid=dm-item][data-peer="`+aliceName+`"]`, chromedp.ByQuery))
	bob.waitTexts("psst, secret")
	bob.say("got it")
	alice.waitTexts("psst, secret", "got it")

	// A room message after the DM reaches carol; the DM never does.
	alice.run(chromedp.Click(`[data-testid=room-item][data-room="`+room+`"]`, chromedp.ByQuery))
	alice.say("public now")
	carol.waitTexts("public now")
	time.Sleep(200 * time.Millisecond)
	var leaked bool
	carol.eval(`document.body.textContent.includes('secret') || document.querySelectorAll('[data-testid=dm-item]').length > 0`, &leaked)
	if leaked {
		t.Fatal("carol can see the private message")
	}
}

func TestMemberListPresence(t *testing.T) {
	requireSuite(t)
	name := namer(t)
	room, aliceName, bobName, carolName := name("members-room"), name("alice.m"), name("bob.m"), name("carol.m")
	alice := newSession(t, "alice", 1280, 800)
	bob := newSession(t, "bob", 1280, 800)
	carol := newSession(t, "carol", 1280, 800)
	alice.login(aliceName)
	bob.login(bobName)
	carol.login(carolName)

	alice.join(room)
	alice.waitMembers(aliceName)
	bob.join(room)
	alice.waitMembers(aliceName, bobName)
	bob.waitMembers(aliceName, bobName)
	carol.join(room)
	alice.waitMembers(aliceName, bobName, carolName)
	alice.waitJS("header count 3", `document.getElementById('conv-sub').textContent === '3 members'`)
	alice.waitJS("room list count 3", `document.querySelector('[data-testid=room-item][data-room="`+room+`"] .count')?.textContent === '3'`)

	// Leaving with the button.
	bob.run(chromedp.Click(`#leave-button`, chromedp.ByID))
	bob.waitJS("room gone", `!window.nbchat.rooms().some(r => r.name === '`+room+`')`)
	alice.waitMembers(aliceName, carolName)
	carol.waitMembers(aliceName, carolName)

	// Closing the tab counts as leaving.
	carol.close()
	alice.waitMembers(aliceName)
	alice.waitJS("header count 1", `document.getElementById('conv-sub').textContent === '1 member'`)
	alice.waitJS("presence lines", `Array.from(document.querySelectorAll('#messages [data-testid=system]')).map(e => e.textContent).join('|').includes('`+bobName+` left')`)
}

func TestReconnectAfterServerRestart(t *testing.T) {
	requireSuite(t)
	name := namer(t)
	room, aliceName, bobName := name("lobby-r"), name("alice.r"), name("bob.r")
	alice := newSession(t, "alice", 1280, 800)
	bob := newSession(t, "bob", 375, 740) // the status text is longest while reconnecting
	alice.login(aliceName)
	bob.login(bobName)
	alice.join(room)
	bob.join(room)
	alice.say("before restart")
	bob.waitTexts("before restart")

	if err := srv.stop(); err != nil {
		t.Logf("server stop: %v", err)
	}
	for _, s := range []*session{alice, bob} {
		s.waitJS("reconnecting", `window.nbchat.state() === 'reconnecting' && document.getElementById('connection-status').textContent.startsWith('reconnecting')`)
	}
	bob.waitJS("countdown shown", `/^reconnecting in \d+s$/.test(document.getElementById('connection-status').textContent)`)
	bob.assertNoHorizontalOverflow()
	// Written while the server is down: pending now, sent once it is back.
	bob.say("queued during restart")
	bob.waitJS("pending", `window.nbchat.pendingCount() === 1 && document.querySelectorAll('#messages [data-pending]').length === 1`)
	// Alice comes back last: by then bob's message has taken seq 1 in the
	// restarted (in-memory) server, so her join with since 1 is accepted and
	// the page must notice that seq 1 is now another message.
	alice.eval(`window.nbchat.simulateOffline(), true`, nil)
	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	bob.waitJS("queued message acknowledged", `window.nbchat.pendingCount() === 0 && !document.querySelector('#messages [data-pending]')`)
	alice.eval(`window.nbchat.simulateOnline(), true`, nil)
	for _, s := range []*session{alice, bob} {
		// Backoff is at most a few seconds this early.
		s.waitJS("online again", `window.nbchat.state() === 'online' && document.getElementById('connection-status').textContent === 'online'`)
		s.waitJS("rejoined", `window.nbchat.rooms().some(r => r.name === '`+room+`' && r.joined)`)
	}
	alice.waitMembers(aliceName, bobName)
	alice.waitTexts("before restart", "queued during restart")

	alice.say("after restart")
	bob.waitTexts("before restart", "queued during restart", "after restart")
	bob.say("still here")
	// Every message exactly once: none lost, none shown twice after the rejoin
	// (the restarted in-memory server numbers the room from 1 again).
	want := []string{"before restart", "queued during restart", "after restart", "still here"}
	alice.waitTexts(want...)
	bob.waitTexts(want...)
	time.Sleep(200 * time.Millisecond)
	for _, s := range []*session{alice, bob} {
		if got := s.texts(); !slices.Equal(got, want) {
			t.Errorf("%s: messages = %q, want %q", s.label, got, want)
		}
		if seqs := s.seqs(); !slices.Equal(seqs, []int{1, 1, 2, 3}) {
			t.Errorf("%s: seqs %v, want [1 1 2 3] (before the restart, then numbered afresh)", s.label, seqs)
		}
	}
}

// TestWifiBlink: one page loses its connection for a while; the other keeps
// chatting. Back online, the first page shows every message once, in order.
func TestWifiBlink(t *testing.T) {
	requireSuite(t)
	name := namer(t)
	room, aliceName, bobName := name("blink"), name("alice.w"), name("bob.w")
	alice := newSession(t, "alice", 1280, 800)
	bob := newSession(t, "bob", 1280, 800)
	alice.login(aliceName)
	bob.login(bobName)
	alice.join(room)
	bob.join(room)
	alice.say("one")
	bob.waitTexts("one")

	bob.goOffline()
	want := []string{"one"}
	for i := 2; i <= 6; i++ {
		msg := fmt.Sprintf("while bob is away %d", i)
		alice.say(msg)
		want = append(want, msg)
	}
	alice.waitTexts(want...)
	bob.goOnline()
	alice.say("back")
	want = append(want, "back")
	bob.waitTexts(want...)
	time.Sleep(200 * time.Millisecond)
	if got := bob.texts(); !slices.Equal(got, want) {
		t.Fatalf("bob: messages = %q, want %q", got, want)
	}
	bob.assertSeqs(1, 7)
	var notes int
	bob.eval(`document.querySelectorAll('#messages [data-testid=note]').length`, &notes)
	if notes != 0 {
		t.Errorf("bob: %d notes about missed messages after a full recovery", notes)
	}

	// A second blink, with messages racing the reconnect.
	bob.goOffline()
	alice.say("during the second blink")
	bob.eval(`window.nbchat.simulateOnline(), true`, nil)
	alice.say("right after")
	alice.say("and one more")
	want = append(want, "during the second blink", "right after", "and one more")
	bob.waitTexts(want...)
	time.Sleep(200 * time.Millisecond)
	bob.assertSeqs(1, 10)
}

// TestSendWhileOffline: a message written without a connection shows as
// pending, goes out on reconnect, is acknowledged and shows once everywhere.
func TestSendWhileOffline(t *testing.T) {
	requireSuite(t)
	name := namer(t)
	room, aliceName, bobName := name("offline-send"), name("alice.o"), name("bob.o")
	alice := newSession(t, "alice", 1280, 800)
	bob := newSession(t, "bob", 1280, 800)
	alice.login(aliceName)
	bob.login(bobName)
	alice.join(room)
	bob.join(room)
	alice.say("hello")
	bob.waitTexts("hello")

	bob.goOffline()
	bob.say("written offline")
	bob.waitJS("pending with a clock", `window.nbchat.pendingCount() === 1 &&
		document.querySelector('#messages [data-pending] [data-testid=message-text]')?.textContent === 'written offline' &&
		!!document.querySelector('#messages [data-pending] .clock')`)
	bob.say("and another")
	bob.waitJS("two pending", `window.nbchat.pendingCount() === 2`)
	time.Sleep(300 * time.Millisecond)
	if got := alice.texts(); !slices.Equal(got, []string{"hello"}) {
		t.Fatalf("alice sees %q while bob is offline", got)
	}

	bob.goOnline()
	bob.waitJS("acknowledged", `window.nbchat.pendingCount() === 0 && !document.querySelector('#messages [data-pending]')`)
	want := []string{"hello", "written offline", "and another"}
	alice.waitTexts(want...)
	bob.waitTexts(want...)
	alice.say("got them")
	want = append(want, "got them")
	bob.waitTexts(want...)
	alice.waitTexts(want...)
	time.Sleep(200 * time.Millisecond)
	for _, s := range []*session{alice, bob} {
		if got := s.texts(); !slices.Equal(got, want) {
			t.Errorf("%s: messages = %q, want %q", s.label, got, want)
		}
		s.assertSeqs(1, 4)
	}
}

// TestPendingSurvivesReload: a message written while offline is still
// pending after the page is reloaded, and is sent once after the login.
func TestPendingSurvivesReload(t *testing.T) {
	requireSuite(t)
	name := namer(t)
	room, aliceName, bobName := name("reload-room"), name("alice.rl"), name("bob.rl")
	alice := newSession(t, "alice", 1280, 800)
	bob := newSession(t, "bob", 1280, 800)
	alice.login(aliceName)
	bob.login(bobName)
	alice.join(room)
	bob.join(room)
	alice.say("first")
	bob.waitTexts("first")
	// Its ack may trail bob's copy; going offline before it arrives would
	// leave "first" pending too.
	alice.waitJS("first acknowledged", `window.nbchat.pendingCount() === 0`)

	alice.goOffline()
	alice.say("written before the reload")
	alice.waitJS("pending", `window.nbchat.pendingCount() === 1`)
	alice.run(chromedp.Reload(), chromedp.WaitVisible(`#name-input`, chromedp.ByID))
	alice.login(aliceName)
	alice.waitJS("sent after the reload", `window.nbchat.pendingCount() === 0`)
	want := []string{"first", "written before the reload"}
	bob.waitTexts(want...)
	time.Sleep(300 * time.Millisecond)
	if got := bob.texts(); !slices.Equal(got, want) {
		t.Fatalf("bob sees %q, want %q", got, want)
	}
	bob.assertSeqs(1, 2)
}

// TestTabsShareTheOutbox: two tabs of one browser share its storage. A
// message written in a tab that is offline survives that tab's reload even
// though the other tab, online, wrote its own outbox meanwhile; and one
// left in a tab that was closed is sent by the other tab at its next login.
func TestTabsShareTheOutbox(t *testing.T) {
	requireSuite(t)
	name := namer(t)
	room, ivy, jon := name("tabs-outbox"), name("ivy.tb"), name("jon.tb")
	tabB := newSession(t, "tabB", 1280, 800) // owns the browser context, so it outlives tabA
	jonS := newSession(t, "jon", 1280, 800)
	tabB.login(ivy)
	jonS.login(jon)
	tabB.join(room)
	jonS.join(room)
	tabA := tabB.newTab("tabA", 1280, 800, srv.url())
	tabA.login(ivy)
	tabA.waitJS("in the room", fmt.Sprintf(`window.nbchat.rooms().some(r => r.name === %q && r.joined)`, room))
	tabA.run(chromedp.Click(`[data-testid=room-item][data-room="`+room+`"]`, chromedp.ByQuery))

	tabA.goOffline()
	tabA.say("written in tab A")
	tabA.waitJS("pending", `window.nbchat.pendingCount() === 1`)
	tabB.say("from tab B")
	jonS.waitTexts("from tab B")
	tabB.waitJS("acknowledged", `window.nbchat.pendingCount() === 0`)
	tabA.run(chromedp.Reload(), chromedp.WaitVisible(`#name-input`, chromedp.ByID))
	tabA.login(ivy)
	jonS.waitTexts("from tab B", "written in tab A")

	// A message left in a closed tab.
	tabA.goOffline()
	tabA.say("left in a closed tab")
	tabA.waitJS("pending", `window.nbchat.pendingCount() === 1`)
	tabA.close()
	tabB.run(chromedp.Reload(), chromedp.WaitVisible(`#name-input`, chromedp.ByID))
	tabB.login(ivy)
	want := []string{"from tab B", "written in tab A", "left in a closed tab"}
	jonS.waitTexts(want...)
	time.Sleep(300 * time.Millisecond)
	if got := jonS.texts(); !slices.Equal(got, want) {
		t.Fatalf("jon: messages = %q, want %q", got, want)
	}
}

// TestLoadEarlier: a newcomer sees the last 50 messages and pages back
// through the rest, keeping its place.
func TestLoadEarlier(t *testing.T) {
	requireSuite(t)
	name := namer(t)
	room := name("history")
	alice := newSession(t, "alice", 1280, 800)
	alice.login(name("alice.h"))
	alice.join(room)
	alice.eval(`(() => {
		const input = document.getElementById('message-input'), form = document.getElementById('composer');
		for (let n = 1; n <= 80; n++) { input.value = 'h' + n; form.requestSubmit(); }
		return true;
	})()`, nil)
	alice.waitJS("80 acknowledged", `window.nbchat.pendingCount() === 0 && document.querySelectorAll('#messages [data-testid=message]').length === 80`)
	alice.assertSeqs(1, 80)

	bob := newSession(t, "bob", 1280, 800)
	bob.login(name("bob.h"))
	bob.join(room)
	bob.waitJS("latest 50", `document.querySelectorAll('#messages [data-testid=message]').length === 50`)
	bob.assertSeqs(31, 80)
	bob.waitJS("load earlier shown", `!document.getElementById('load-earlier-row').hidden`)
	// Scroll up to the control, as a person would; the oldest message shown
	// must stay where it is when the earlier ones are added above it.
	var top0 float64
	bob.eval(`(() => { const l = document.getElementById('messages'); l.scrollTop = 0; return l.querySelector('[data-seq="31"]').getBoundingClientRect().top; })()`, &top0)

	bob.run(chromedp.Click(`#load-earlier`, chromedp.ByID))
	bob.waitJS("all 80", `document.querySelectorAll('#messages [data-testid=message]').length === 80`)
	bob.assertSeqs(1, 80)
	want := make([]string, 80)
	for i := range want {
		want[i] = fmt.Sprintf("h%d", i+1)
	}
	if got := bob.texts(); !slices.Equal(got, want) {
		t.Fatalf("bob: messages = %q, want h1..h80", got)
	}
	bob.waitJS("load earlier hidden", `document.getElementById('load-earlier-row').hidden`)
	var top1 float64
	bob.eval(`document.querySelector('#messages [data-seq="31"]').getBoundingClientRect().top`, &top1)
	if d := top1 - top0; d > 2 || d < -2 {
		t.Errorf("the view moved by %.0fpx when earlier messages were added", d)
	}
	var unread int
	bob.eval(`window.nbchat.unread()['#`+room+`']`, &unread)
	if unread != 0 {
		t.Errorf("bob: %d unread after joining; the backlog is not unread", unread)
	}
}

// TestDMWhileAway: a private message sent while its target's connection is
// down reaches the target once, after it reconnects.
func TestDMWhileAway(t *testing.T) {
	requireSuite(t)
	name := namer(t)
	room, aliceName, bobName := name("dm-away"), name("alice.d"), name("bob.d")
	alice := newSession(t, "alice", 1280, 800)
	bob := newSession(t, "bob", 1280, 800)
	alice.login(aliceName)
	bob.login(bobName)
	alice.join(room)
	bob.join(room)
	bob.waitMembers(aliceName, bobName)
	bob.run(chromedp.Click(`#member-list [data-name="`+aliceName+`"] button`, chromedp.ByQuery))
	bob.waitJS("dm open", `window.nbchat.active()?.kind === 'dm'`)
	// A first exchange: the server forgets at once a user who never had a
	// direct message or sent a message with an id, and then answers
	// no_such_user even though the user was here a moment ago.
	bob.say("hi alice")
	alice.waitJS("unread dm", `window.nbchat.unread()['@`+bobName+`'] === 1`)
	alice.run(chromedp.Click(`[data-testid=dm-item][data-peer="`+bobName+`"]`, chromedp.ByQuery))
	alice.waitTexts("hi alice")

	alice.goOffline()
	bob.say("while you were away")
	bob.waitJS("dm delivered", `window.nbchat.pendingCount() === 0 && document.querySelectorAll('#messages [data-testid=message]').length === 2`)
	alice.goOnline()
	alice.waitTexts("hi alice", "while you were away")
	bob.say("welcome back")
	alice.waitTexts("hi alice", "while you were away", "welcome back")
	alice.say("thanks")
	want := []string{"hi alice", "while you were away", "welcome back", "thanks"}
	bob.waitTexts(want...)
	time.Sleep(200 * time.Millisecond)
	for _, s := range []*session{alice, bob} {
		if got := s.texts(); !slices.Equal(got, want) {
			t.Errorf("%s: messages = %q, want %q", s.label, got, want)
		}
	}
}

func TestXSSShownAsText(t *testing.T) {
	requireSuite(t)
	name := namer(t)
	room, aliceName, bobName := name("xss"), name("alice.x"), name("bob.x")
	const payload = `<img src=x onerror="window.__xss=1">`
	alice := newSession(t, "alice", 1280, 800)
	bob := newSession(t, "bob", 1280, 800)
	alice.login(aliceName)
	bob.login(bobName)
	alice.join(room)
	bob.join(room)

	alice.say(payload)
	alice.say("see https://example.com/a?b=1 and javascript:alert(1)")
	want := []string{payload, "see https://example.com/a?b=1 and javascript:alert(1)"}
	bob.waitTexts(want...)
	alice.waitTexts(want...)
	time.Sleep(300 * time.Millisecond) // give a broken page time to load the image and fire onerror

	for _, s := range []*session{alice, bob} {
		var res struct {
			XSS    string `json:"xss"`
			Imgs   int    `json:"imgs"`
			Links  int    `json:"links"`
			Href   string `json:"href"`
			Rel    string `json:"rel"`
			Target string `json:"target"`
		}
		s.eval(`(() => {
			const a = document.querySelectorAll('#messages a');
			return {
				xss: typeof window.__xss,
				imgs: document.querySelectorAll('#messages img').length,
				links: a.length,
				href: a[0] ? a[0].href : '',
				rel: a[0] ? a[0].rel : '',
				target: a[0] ? a[0].target : '',
			};
		})()`, &res)
		if res.XSS != "undefined" || res.Imgs != 0 {
			t.Errorf("%s: window.__xss is %s, %d <img> in messages", s.label, res.XSS, res.Imgs)
		}
		if res.Links != 1 || res.Href != "https://example.com/a?b=1" || res.Rel != "noopener noreferrer" || res.Target != "_blank" {
			t.Errorf("%s: links = %+v, want one https link with rel=noopener noreferrer target=_blank", s.label, res)
		}
	}
}

// TestNameTakenAndInvalid: with names exclusive (-sessions 1, as in a
// cluster), a second page asking for a name in use is refused.
func TestNameTakenAndInvalid(t *testing.T) {
	requireSuite(t)
	node := startNode(t, "-data", "", "-sessions", "1")
	name := namer(t)
	first := newSessionAt(t, "first", 1280, 800, node.url())
	second := newSessionAt(t, "second", 1280, 800, node.url())
	first.login(name("dave.n"))

	// Invalid names are refused by the page itself.
	second.run(chromedp.SetValue(`#name-input`, "bad name!", chromedp.ByID), chromedp.Click(`#login-button`, chromedp.ByID))
	second.waitJS("invalid name message", `document.getElementById('login-error').textContent.length > 0 && window.nbchat.state() === 'offline'`)

	// A taken name: the server refuses the upgrade (409); the page says the
	// name is in use and tries once more (the holder might be a session of
	// this user that went away), then says it is taken.
	second.run(chromedp.SetValue(`#name-input`, name("dave.n"), chromedp.ByID), chromedp.Click(`#login-button`, chromedp.ByID))
	second.waitJS("name in use message", `document.getElementById('login-error').textContent.includes('name is in use') && window.nbchat.state() === 'offline'`)
	second.waitJSFor("name taken message", `document.getElementById('login-error').textContent.includes('name taken or invalid') && window.nbchat.state() === 'offline'`, 15*time.Second)
	if st := first.state(); st != "online" {
		t.Fatalf("first session is %q after a duplicate login attempt", st)
	}
	second.login(name("dave.n2"))
}

// TestTwoTabs: a user signed in on two pages (tabs, or a phone and a
// laptop) is one user: both pages show the room's messages, each other's
// as the user's own, and the user's direct messages; the others see one
// member.
func TestTwoTabs(t *testing.T) {
	requireSuite(t)
	name := namer(t)
	room, erin, frank := name("two-tabs"), name("erin.tt"), name("frank.tt")
	tab1 := newSession(t, "tab1", 1280, 800)
	tab2 := newSession(t, "tab2", 1280, 800)
	other := newSession(t, "frank", 1280, 800)
	tab1.login(erin)
	tab2.login(erin)
	other.login(frank)
	for _, s := range []*session{tab1, tab2, other} {
		s.join(room)
	}
	for _, s := range []*session{tab1, tab2, other} {
		s.waitMembers(erin, frank)
	}

	tab1.say("from the first tab")
	tab2.say("from the second tab")
	other.say("hello erin")
	want := []string{"from the first tab", "from the second tab", "hello erin"}
	for _, s := range []*session{tab1, tab2, other} {
		s.waitTexts(want...)
		s.assertSeqs(1, 3)
	}
	// Each tab shows both tabs' messages as its user's own.
	for _, s := range []*session{tab1, tab2} {
		var own int
		s.eval(`document.querySelectorAll('#messages .msg.own').length`, &own)
		if own != 2 {
			t.Errorf("%s: %d messages shown as own, want 2", s.label, own)
		}
	}

	// A direct message reaches both tabs.
	other.run(chromedp.Click(`#member-list [data-name="`+erin+`"] button`, chromedp.ByQuery))
	other.waitJS("dm open", `window.nbchat.active()?.kind === 'dm' && window.nbchat.active()?.name === '`+erin+`'`)
	other.say("for both tabs")
	for _, s := range []*session{tab1, tab2} {
		s.waitJS("unread dm", `window.nbchat.unread()['@`+frank+`'] === 1`)
	}

	// One tab closes: erin is still in the room.
	tab2.close()
	time.Sleep(300 * time.Millisecond)
	other.run(chromedp.Click(`[data-testid=room-item][data-room="`+room+`"]`, chromedp.ByQuery))
	other.waitMembers(erin, frank)
	other.say("still here?")
	tab1.waitTexts(append(want, "still here?")...)
}

// TestTyping: a page with words in its composer shows as typing to the
// others in the room, and in a private conversation to the peer; the
// notice ends when the message arrives.
func TestTyping(t *testing.T) {
	requireSuite(t)
	name := namer(t)
	room, gina, hal := name("typing"), name("gina.ty"), name("hal.ty")
	g := newSession(t, "gina", 1280, 800)
	h := newSession(t, "hal", 1280, 800)
	g.login(gina)
	h.login(hal)
	g.join(room)
	h.join(room)
	h.waitMembers(gina, hal)

	g.run(chromedp.SendKeys(`#message-input`, "half a thought", chromedp.ByID))
	h.waitJS("gina typing", fmt.Sprintf(`JSON.stringify(window.nbchat.typing()) === %q &&
		document.getElementById('typing').textContent === %q`, jsonList([]string{gina}), gina+" is typing…"))
	var own []string
	g.eval(`window.nbchat.typing()`, &own)
	if len(own) != 0 {
		t.Fatalf("gina's page shows %q typing, want nobody (not herself)", own)
	}
	g.run(pressEnter(0))
	h.waitTexts("half a thought")
	h.waitJS("typing cleared by the message", `window.nbchat.typing().length === 0 && document.getElementById('typing').textContent === ''`)

	// Privately: hal writes to gina, whose private conversation with him is open.
	g.run(chromedp.Click(`#member-list [data-name="`+hal+`"] button`, chromedp.ByQuery))
	g.waitJS("dm open", `window.nbchat.active()?.kind === 'dm' && window.nbchat.active()?.name === '`+hal+`'`)
	h.run(chromedp.Click(`#member-list [data-name="`+gina+`"] button`, chromedp.ByQuery))
	h.waitJS("dm open", `window.nbchat.active()?.kind === 'dm' && window.nbchat.active()?.name === '`+gina+`'`)
	h.run(chromedp.SendKeys(`#message-input`, "psst", chromedp.ByID))
	g.waitJS("hal typing privately", fmt.Sprintf(`document.getElementById('typing').textContent === %q`, hal+" is typing…"))
	// Not in the room, where hal is not typing.
	g.run(chromedp.Click(`[data-testid=room-item][data-room="`+room+`"]`, chromedp.ByQuery))
	g.waitJS("room shows nobody typing", `window.nbchat.active()?.kind === 'room' && document.getElementById('typing').textContent === ''`)
}

func TestPhoneWidth(t *testing.T) {
	requireSuite(t)
	name := namer(t)
	room := name("phone")
	phone := newSession(t, "phone", 375, 740)
	phone.login(name("erin.p"))
	// The join form lives in the rooms drawer on a phone.
	phone.waitJS("rooms panel collapsed", `getComputedStyle(document.getElementById('rooms-panel')).display === 'none' && getComputedStyle(document.getElementById('members-panel')).display === 'none'`)
	phone.run(chromedp.Click(`#toggle-rooms`, chromedp.ByID))
	phone.waitJS("rooms drawer open", `getComputedStyle(document.getElementById('rooms-panel')).display !== 'none'`)
	phone.join(room)
	phone.waitJS("drawer closed after join", `getComputedStyle(document.getElementById('rooms-panel')).display === 'none'`)
	phone.say(strings.Repeat("x", 300))
	phone.say("a long link https://example.com/" + strings.Repeat("segment/", 30))
	phone.say("short")
	phone.waitJS("3 messages", `document.querySelectorAll('#messages [data-testid=message]').length === 3`)

	phone.assertNoHorizontalOverflow()
	phone.run(chromedp.Click(`#toggle-members`, chromedp.ByID))
	phone.waitMembers(name("erin.p"))
	phone.run(chromedp.KeyEvent(kb.Escape))
	phone.waitJS("members drawer closed", `getComputedStyle(document.getElementById('members-panel')).display === 'none'`)

	shot := phone.screenshot("")
	cfg, err := png.DecodeConfig(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if cfg.Width != 375 {
		t.Errorf("screenshot width %d, want 375", cfg.Width)
	}
}

// TestScreenshots saves pictures of the page in use for the README
// (NBCHAT_SCREENSHOTS=1 go test ./e2e -run Screenshots).
func TestScreenshots(t *testing.T) {
	requireSuite(t)
	if os.Getenv("NBCHAT_SCREENSHOTS") != "1" {
		t.Skip("set NBCHAT_SCREENSHOTS=1 to write docs/screenshot-*.png")
	}
	name := namer(t)
	design, general := name("design"), name("general")
	alice := newSession(t, "alice", 1280, 800)
	bob := newSession(t, "bob", 375, 740)
	carol := newSession(t, "carol", 1280, 800)
	alice.login(name("alice"))
	bob.login(name("bob"))
	carol.login(name("carol"))
	for _, s := range []*session{alice, bob, carol} {
		s.join(design)
	}
	alice.join(general)
	bob.join(general)
	carol.join(general)
	alice.waitMembers(name("alice"), name("bob"), name("carol"))

	alice.say("Morning all! Shall we ship the new chat page today?")
	bob.say("Yes — the tests are green on my side.")
	carol.say("Two things before we do:\n1. check the phone layout\n2. update the README screenshots")
	alice.say("Screenshots are coming from the e2e run, see https://example.com/nbchat/e2e")
	bob.say("<b>this stays plain text</b> :)")
	alice.waitTexts(
		"Morning all! Shall we ship the new chat page today?",
		"Yes — the tests are green on my side.",
		"Two things before we do:\n1. check the phone layout\n2. update the README screenshots",
		"Screenshots are coming from the e2e run, see https://example.com/nbchat/e2e",
		"<b>this stays plain text</b> :)")
	// Something unread elsewhere, so the badges show.
	carol.run(chromedp.Click(`[data-testid=room-item][data-room="`+design+`"]`, chromedp.ByQuery))
	carol.say("design review at 3?")
	carol.run(chromedp.Click(`#member-list [data-name="`+name("alice")+`"] button`, chromedp.ByQuery))
	carol.say("got a minute later?")
	alice.waitJS("unread badges", `document.querySelectorAll('#rooms-panel .badge').length >= 2`)
	bob.waitJS("last message", `document.body.textContent.includes('plain text')`)
	bob.run(chromedp.SendKeys(`#message-input`, "Ship it", chromedp.ByID))
	alice.waitJS("bob typing", `window.nbchat.typing().length === 1`)
	alice.screenshot(filepath.Join("..", "docs", "screenshot-desktop.png"))
	bob.screenshot(filepath.Join("..", "docs", "screenshot-phone.png"))
}
