package loop

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fdHelperEnv makes TestFDStarvedServerHelper run: it is the server side of
// TestAcceptBacksOffWhenOutOfFiles, in its own process so that using up its
// file descriptors harms nothing else.
const fdHelperEnv = "NBCHAT_FD_STARVED_HELPER"

// TestFDStarvedServerHelper serves with every file descriptor taken, prints
// its address, frees the descriptors when it reads "release" and returns
// when its input closes.
func TestFDStarvedServerHelper(t *testing.T) {
	if os.Getenv(fdHelperEnv) != "1" {
		t.Skip("run by TestAcceptBacksOffWhenOutOfFiles")
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = 256
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{})
	var held []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if errors.Is(err, syscall.EMFILE) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, f)
	}
	fmt.Printf("addr %s held %d\n", s.Addr(), len(held))
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "release" {
			for _, f := range held {
				f.Close()
			}
			held = nil
			fmt.Println("released")
		}
	}
}

// TestAcceptBacksOffWhenOutOfFiles checks that a server out of file
// descriptors, with a client waiting to be accepted, does not spin a core
// retrying the accept, and serves the client once descriptors free up.
func TestAcceptBacksOffWhenOutOfFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second process")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestFDStarvedServerHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), fdHelperEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	lines := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	line := func(prefix string) string {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("helper exited before printing %q", prefix)
				}
				if strings.HasPrefix(l, prefix) {
					return l
				}
			case <-timeout:
				t.Fatalf("helper did not print %q", prefix)
			}
		}
	}
	m := regexp.MustCompile(`^addr (\S+) held (\d+)$`).FindStringSubmatch(line("addr "))
	if m == nil {
		t.Fatal("helper printed no address")
	}
	addr := m[1]
	if n, _ := strconv.Atoi(m[2]); n == 0 {
		t.Fatal("helper held no descriptors")
	}

	// The kernel completes the TCP handshake into the listen backlog; the
	// server cannot accept it.
	conn := dialFrom(t, "", addr)
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(upgradeRequest(addr, "/ws?name=waiting", nil)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	cpu0 := processCPU(t, cmd.Process.Pid)
	time.Sleep(time.Second)
	if used := processCPU(t, cmd.Process.Pid) - cpu0; used > 300*time.Millisecond {
		t.Errorf("server used %v of CPU in 1s while out of file descriptors; it should back off", used)
	}

	if _, err := io.WriteString(stdin, "release\n"); err != nil {
		t.Fatal(err)
	}
	line("released")
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("waiting client, once descriptors are free: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("waiting client got %d, want 101", resp.StatusCode)
	}

	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fails := regexp.MustCompile(`(?m)^nbchat_accept_errors_total (\S+)$`).FindSubmatch(body)
	if fails == nil {
		t.Fatal("no nbchat_accept_errors_total in /metrics")
	}
	if n, _ := strconv.ParseFloat(string(fails[1]), 64); n < 1 {
		t.Errorf("nbchat_accept_errors_total = %s, want the failed accepts counted", fails[1])
	}
}

// processCPU is the user plus system CPU time pid has used.
func processCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th, in clock ticks (100 per second).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func TestMaxLoadLeavesDescriptorsForFiles(t *testing.T) {
	for _, tc := range []struct{ conns, limit, want int }{
		{19900, 20000, 19950}, // the default -max-conns: room for upgrades in flight
		{50000, 20000, 19950}, // past the file limit: capped
		{100, 20000, 200},
		{1000, 0, 1100}, // limit unknown
	} {
		if got := maxLoad(tc.conns, tc.limit); got != tc.want {
			t.Errorf("maxLoad(%d, %d) = %d, want %d", tc.conns, tc.limit, got, tc.want)
		}
	}
}
