package config

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const twoListeners = `
aws: {region: eu-west-1}
listeners:
  - paths: [{address: db.example.com:5432}]
  - engine: mysql
    paths: [{address: db.example.com:3306}]
`

func TestUnixSocketsDirGivesEveryListenerItsSocket(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("RDSVALET_UNIX_SOCKETS_DIR", dir)
	c, err := load(t, writeConfig(t, twoListeners))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Listeners[0].UnixSocketFile(), filepath.Join(dir, ".s.PGSQL.5432"); got != want {
		t.Errorf("postgres socket %q, want %q", got, want)
	}
	if got, want := c.Listeners[1].UnixSocketFile(), filepath.Join(dir, "mysql-3306.sock"); got != want {
		t.Errorf("mysql socket %q, want %q", got, want)
	}
	if m := c.UnixSockets.SocketMode(); m != 0o660 {
		t.Errorf("default mode %v, want 0660", m)
	}
	if uid, gid := c.UnixSockets.SocketOwner(); uid != -1 || gid != -1 {
		t.Errorf("default owner %d:%d, want -1:-1 (leave as is)", uid, gid)
	}
}

func TestNoUnixSocketByDefault(t *testing.T) {
	c, err := load(t, writeConfig(t, twoListeners))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range c.Listeners {
		if l.UnixSocketFile() != "" {
			t.Errorf("listener %s has socket %q without any unix_socket setting", l.Name, l.UnixSocketFile())
		}
	}
}

func TestUnixSocketValidation(t *testing.T) {
	dir := t.TempDir()
	notSocket := filepath.Join(dir, "file")
	if err := os.WriteFile(notSocket, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "live.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	long := "/" + strings.Repeat("x", 100) + "/dir"
	cases := []struct{ name, top, listener, want string }{
		{"relative dir", "unix_sockets: {dir: run}", "", `unix_sockets.dir: "run" is not an absolute path`},
		{"mode not octal", "unix_sockets: {dir: " + dir + ", mode: \"0999\"}", "", `unix_sockets.mode: "0999" is not an octal`},
		{"mode too wide", "unix_sockets: {dir: " + dir + ", mode: \"10660\"}", "", `unix_sockets.mode: "10660" is not an octal`},
		{"owner cannot use it", "unix_sockets: {dir: " + dir + ", mode: \"0066\"}", "", `must let the owner read and write`},
		{"execute bits", "unix_sockets: {dir: " + dir + ", mode: \"0770\"}", "", `sets execute bits`},
		{"owner name", "unix_sockets: {dir: " + dir + ", owner: app}", "", `unix_sockets.owner: "app" is not a numeric id`},
		{"group negative", "unix_sockets: {dir: " + dir + ", group: \"-1\"}", "", `unix_sockets.group: "-1" is not a numeric id`},
		{"not a socket", "", "unix_socket: " + notSocket, `listeners[1].unix_socket: "` + notSocket + `" exists and is not a socket`},
		{"parent is a file", "", "unix_socket: " + notSocket + "/my.sock", `listeners[1].unix_socket: "` + notSocket + `" is not a directory`},
		{"over sun_path", "unix_sockets: {dir: " + long + "}", "", `listeners[0].unix_socket: socket file "` + long + `/.s.PGSQL.5432" is 119 bytes, over the 107`},
		{"pg port 0", "", "", ""},
		{"same file twice", "", "unix_socket: " + filepath.Join(dir, "a.sock") + "\n    paths: [{address: db.example.com:3306}]\n  - name: m2\n    engine: mysql\n    listen: 127.0.0.1:3307\n    unix_socket: " + filepath.Join(dir, "a.sock"), `listeners[2].unix_socket: socket file "` + filepath.Join(dir, "a.sock") + `" is already used by listeners[1]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := twoListeners + c.top + "\n"
			if c.listener != "" {
				body = strings.Replace(twoListeners, "    paths: [{address: db.example.com:3306}]", "    "+c.listener+"\n    paths: [{address: db.example.com:3306}]", 1) + c.top + "\n"
			}
			if c.name == "pg port 0" {
				body = strings.Replace(twoListeners, "  - paths: [{address: db.example.com:5432}]", "  - listen: 127.0.0.1:0\n    unix_socket: "+dir+"\n    paths: [{address: db.example.com:5432}]", 1)
				c.want = `listeners[0].unix_socket: PostgreSQL names its socket after listen's port, and "127.0.0.1:0" has port 0`
			}
			_, err := load(t, writeConfig(t, body))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q\nconfig:\n%s", err, c.want, body)
			}
		})
	}
	// A socket already there passes validation: whether it is live or stale is for the bind.
	body := strings.Replace(twoListeners, "    paths: [{address: db.example.com:3306}]", "    unix_socket: "+sock+"\n    paths: [{address: db.example.com:3306}]", 1)
	if _, err := load(t, writeConfig(t, body)); err != nil {
		t.Fatalf("an existing socket: %v", err)
	}
}
