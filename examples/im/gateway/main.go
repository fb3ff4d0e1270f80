// Command gateway is the IM long-connection gateway of examples/im: it
// holds browsers' WebSocket connections and keeps everything else in
// mecha, through the Go SDK.
//
//   - A login saves a session in Crux ({u:<user>}:session:<conn>: the
//     connection, this gateway's instance id, the device, when it was last
//     seen), with a TTL that the client's heartbeats refresh. The hash
//     tag keeps a user's sessions and inbox in one slot.
//   - A message to a user is first written to the user's inbox
//     ({u:<user>}:inbox:<id>); that write is the sender's acknowledgement.
//     Then it is pushed to every session of the user, through mecha, to
//     the one gateway instance that holds the connection
//     (mecha-instance-id). A session whose instance is gone is deleted.
//     The recipient's client acknowledges each message, which removes it
//     from the inbox; what is left is delivered at the next login.
//   - A group message is published to the topic im-group; the gateway
//     that receives the event (pub/sub: one instance per event) writes
//     it to every member's inbox and pushes it.
//
// The gateway listens on two ports: WEB_PORT for browsers (the chat page
// and /ws) and APP_PORT for its runtime (POST /push). Both are on
// 127.0.0.1 unless IM_LISTEN says otherwise.
//
// It is an example: it trusts the user name a client logs in with (no
// authentication), and APP_PORT is guarded only by the connection ids'
// 48 random bits. Put a login in front of /ws, and keep APP_PORT where
// only the runtime reaches it, before using it for anything real.
package main

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"mecha/sdk"
)

//go:embed web
var webFS embed.FS

const (
	store = "statestore"
	// pubsub and groupTopic carry group messages.
	pubsub     = "pubsub"
	groupTopic = "im-group"
	// maxFrame bounds a client's frame; a larger one closes the
	// connection (WebSocket status 1009).
	maxFrame = 16 << 10
	// maxText bounds a message's text.
	maxText = 4096
)

// sessionTTL is how long a session lives without a heartbeat.
var sessionTTL = envDuration("IM_SESSION_TTL", 60*time.Second)

var validName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("gateway stopped", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	c, err := sdk.New()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	g := &gateway{sdk: c, log: log, conns: map[string]*conn{}, peers: splitList(os.Getenv("IM_WEB_PEERS"))}
	// The instance id others reach this gateway by.
	for g.instance == "" {
		md, err := c.Metadata(ctx)
		if err == nil {
			g.instance = md.InstanceID
			break
		}
		log.Info("waiting for the runtime", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	host := os.Getenv("IM_LISTEN")
	if host == "" {
		host = "127.0.0.1"
	}
	web, err := net.Listen("tcp", net.JoinHostPort(host, os.Getenv("WEB_PORT")))
	if err != nil {
		return err
	}
	app, err := net.Listen("tcp", net.JoinHostPort(host, os.Getenv("APP_PORT")))
	if err != nil {
		return err
	}
	webSrv := &http.Server{Handler: g.webHandler(), ReadHeaderTimeout: 10 * time.Second}
	appSrv := &http.Server{Handler: g.appHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = webSrv.Serve(web) }()
	go func() { _ = appSrv.Serve(app) }()
	go g.consumeGroups(ctx)
	if p := os.Getenv("IM_PPROF_FILE"); p != "" {
		// The benchmark's profile of the gateway, until it stops.
		if f, err := os.Create(p); err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	log.Info("gateway listening", "web", web.Addr().String(), "app", app.Addr().String(), "instance", g.instance)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = appSrv.Shutdown(sctx)
	return webSrv.Shutdown(sctx)
}

type gateway struct {
	sdk      *sdk.Client
	log      *slog.Logger
	instance string
	peers    []string // the web addresses of every gateway, for the page

	mu    sync.Mutex
	conns map[string]*conn // by connection id
	seq   atomic.Uint64
	known sync.Map // users known to have logged in once
}

// conn is one browser connection.
type conn struct {
	id, user, device string
	ws               *websocket.Conn
	wmu              sync.Mutex

	dmu       sync.Mutex
	delivered map[string]bool // message ids sent on this connection
	pings     int             // heartbeats so far (the read loop's)
}

// wasDelivered reports whether message id was sent on c, and records
// that it is now. The record is bounded: past it, a message may be sent
// twice, which the client's ids make harmless.
func (c *conn) wasDelivered(id string) bool {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.delivered[id] {
		return true
	}
	if len(c.delivered) >= 4*inboxPage {
		clear(c.delivered)
	}
	c.delivered[id] = true
	return false
}

func (c *conn) write(ctx context.Context, v any) error {
	b, _ := json.Marshal(v)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return c.ws.Write(wctx, websocket.MessageText, b)
}

// frame is every message on the WebSocket, both ways.
type frame struct {
	Type   string `json:"type"`
	ID     string `json:"id,omitempty"`  // the client's id of a request, echoed
	Msg    string `json:"msg,omitempty"` // a message's id
	To     string `json:"to,omitempty"`
	From   string `json:"from,omitempty"`
	Group  string `json:"group,omitempty"`
	Text   string `json:"text,omitempty"`
	Error  string `json:"error,omitempty"`
	User   string `json:"user,omitempty"`
	Conn   string `json:"conn,omitempty"`
	Inst   string `json:"instance,omitempty"`
	SentAt int64  `json:"sentAt,omitempty"`
}

// message is what the inbox keeps and what is pushed.
type message struct {
	ID     string `json:"id"`
	From   string `json:"from"`
	To     string `json:"to"`
	Group  string `json:"group,omitempty"`
	Text   string `json:"text"`
	SentAt int64  `json:"sentAt"`
}

// session is a user's connection as Crux keeps it.
type session struct {
	Conn     string `json:"conn"`
	Gateway  string `json:"gateway"`
	Device   string `json:"device"`
	LastSeen int64  `json:"lastSeen"`
}

func userKey(user, rest string) string { return "{u:" + user + "}:" + rest }

func (g *gateway) webHandler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web")
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"gateways": g.peers, "instance": g.instance})
	})
	mux.HandleFunc("GET /ws", g.serveWS)
	return mux
}

func (g *gateway) appHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /push", g.push)
	return mux
}

// originPatterns are the hosts whose pages may connect: the gateways'.
func (g *gateway) originPatterns() []string {
	var out []string
	for _, p := range g.peers {
		if u, err := url.Parse(p); err == nil && u.Host != "" {
			out = append(out, u.Host)
		}
	}
	return out
}

// serveWS is a login: /ws?user=U&device=D.
func (g *gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	user, device := r.URL.Query().Get("user"), r.URL.Query().Get("device")
	if device == "" {
		device = "web"
	}
	if !validName.MatchString(user) || !validName.MatchString(device) {
		http.Error(w, "user and device must be 1-64 letters, digits, '_', '.' or '-'", http.StatusBadRequest)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: g.originPatterns()})
	if err != nil {
		return
	}
	ws.SetReadLimit(maxFrame)
	c := &conn{id: g.instance + "-" + randomID(), user: user, device: device, ws: ws, delivered: map[string]bool{}}
	ctx := r.Context()
	defer ws.CloseNow()
	g.mu.Lock()
	g.conns[c.id] = c
	g.mu.Unlock()
	defer g.logout(c)
	if err := g.login(ctx, c); err != nil {
		g.log.Warn("login failed", "user", user, "err", err)
		_ = ws.Close(websocket.StatusTryAgainLater, "login failed: "+err.Error())
		return
	}
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			return // closed, or a frame over maxFrame (1009)
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			_ = c.write(ctx, frame{Type: "error", Error: "malformed frame: " + err.Error()})
			continue
		}
		if err := g.handle(ctx, c, &f); err != nil {
			_ = c.write(ctx, frame{Type: "error", ID: f.ID, Error: err.Error()})
		}
	}
}

// login registers the user, saves the session, and delivers the inbox.
func (g *gateway) login(ctx context.Context, c *conn) error {
	// The profile (which makes the user known) and the session in one
	// call: the hash tag puts both in one slot.
	if err := g.sdk.ExecuteStateTransaction(ctx, store, []sdk.Op{
		{Key: userKey(c.user, "profile"), Value: []byte(`{}`)},
		{Key: userKey(c.user, "session:"+c.id), Value: c.sessionValue(g.instance), Opts: []sdk.StateOption{sdk.WithTTL(sessionTTL)}},
	}); err != nil {
		return err
	}
	g.known.Store(c.user, true)
	if err := c.write(ctx, frame{Type: "welcome", User: c.user, Conn: c.id, Inst: g.instance}); err != nil {
		return err
	}
	return g.redeliver(ctx, c)
}

// inboxPage bounds what one inbox read delivers: a long inbox drains a
// page per heartbeat as the client acknowledges.
const inboxPage = 256

// redeliver sends the connection the inbox's messages it has not been
// sent yet (the first page): at login, and every third heartbeat, which
// catches a message whose push failed while the connection lived.
func (g *gateway) redeliver(ctx context.Context, c *conn) error {
	inbox, err := g.sdk.ScanState(ctx, store, userKey(c.user, "inbox:"), inboxPage)
	if err != nil {
		return err
	}
	for _, it := range inbox {
		var m message
		if json.Unmarshal(it.Value, &m) != nil || c.wasDelivered(m.ID) {
			continue
		}
		if err := c.write(ctx, msgFrame(&m)); err != nil {
			return err
		}
	}
	return nil
}

func (g *gateway) saveSession(ctx context.Context, c *conn) error {
	return g.sdk.SaveState(ctx, store, userKey(c.user, "session:"+c.id), c.sessionValue(g.instance), sdk.WithTTL(sessionTTL))
}

func (c *conn) sessionValue(instance string) []byte {
	b, _ := json.Marshal(session{Conn: c.id, Gateway: instance, Device: c.device, LastSeen: time.Now().UnixMilli()})
	return b
}

func (g *gateway) logout(c *conn) {
	g.mu.Lock()
	delete(g.conns, c.id)
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = g.sdk.DeleteState(ctx, store, userKey(c.user, "session:"+c.id))
}

func msgFrame(m *message) frame {
	return frame{Type: "msg", Msg: m.ID, From: m.From, Group: m.Group, Text: m.Text, SentAt: m.SentAt}
}

// handle serves one client frame.
func (g *gateway) handle(ctx context.Context, c *conn, f *frame) error {
	switch f.Type {
	case "ping":
		if err := g.saveSession(ctx, c); err != nil {
			return err
		}
		if err := c.write(ctx, frame{Type: "pong", ID: f.ID}); err != nil {
			return err
		}
		// Every third heartbeat (a minute with the page's 20 s) reads
		// the inbox again: a message whose push failed while the
		// connection lived waits at most that long.
		if c.pings++; c.pings%3 == 0 {
			return g.redeliver(ctx, c)
		}
		return nil
	case "send":
		if !validName.MatchString(f.To) {
			return fmt.Errorf("bad recipient %q", f.To)
		}
		if err := checkText(f.Text); err != nil {
			return err
		}
		if err := g.checkKnown(ctx, f.To); err != nil {
			return err
		}
		m := &message{ID: g.messageID(c, f), From: c.user, To: f.To, Text: f.Text, SentAt: time.Now().UnixMilli()}
		if err := g.deliver(ctx, m); err != nil {
			return err
		}
		return c.write(ctx, frame{Type: "sent", ID: f.ID, Msg: m.ID})
	case "join":
		if !validName.MatchString(f.Group) {
			return fmt.Errorf("bad group %q", f.Group)
		}
		if err := g.sdk.SaveState(ctx, store, "{g:"+f.Group+"}:member:"+c.user, []byte(`{}`)); err != nil {
			return err
		}
		return c.write(ctx, frame{Type: "joined", ID: f.ID, Group: f.Group})
	case "group":
		if !validName.MatchString(f.Group) {
			return fmt.Errorf("bad group %q", f.Group)
		}
		if err := checkText(f.Text); err != nil {
			return err
		}
		m := message{ID: g.messageID(c, f), From: c.user, Group: f.Group, Text: f.Text, SentAt: time.Now().UnixMilli()}
		b, _ := json.Marshal(m)
		if err := g.sdk.Publish(ctx, pubsub, groupTopic, b, sdk.WithContentType("application/json"), sdk.WithPublishMetadata("partitionKey", f.Group)); err != nil {
			return err
		}
		return c.write(ctx, frame{Type: "sent", ID: f.ID, Msg: m.ID})
	case "ack":
		if f.Msg == "" || len(f.Msg) > 128 {
			return fmt.Errorf("ack without a message id")
		}
		return g.sdk.DeleteState(ctx, store, userKey(c.user, "inbox:"+f.Msg))
	}
	return fmt.Errorf("unknown frame type %q", f.Type)
}

// checkKnown refuses a recipient who never logged in. Users are never
// forgotten, so a known one is remembered here.
func (g *gateway) checkKnown(ctx context.Context, user string) error {
	if _, ok := g.known.Load(user); ok {
		return nil
	}
	it, err := g.sdk.GetState(ctx, store, userKey(user, "profile"))
	if err != nil {
		return err
	}
	if !it.Exists() {
		return fmt.Errorf("unknown user %q", user)
	}
	g.known.Store(user, true)
	return nil
}

func checkText(t string) error {
	switch {
	case t == "":
		return errors.New("empty message")
	case len(t) > maxText:
		return fmt.Errorf("message of %d bytes, more than %d", len(t), maxText)
	}
	return nil
}

// messageID names a message so that an inbox scan is in sending order.
// A client's request id (which starts with its clock, in hex) makes it:
// a request sent again after a reconnect writes the same inbox key, not
// a second message. Without one, the gateway's clock does.
func (g *gateway) messageID(c *conn, f *frame) string {
	if validName.MatchString(f.ID) {
		// ':' is not in names: no two senders' ids meet.
		return f.ID + ":" + c.user
	}
	return fmt.Sprintf("%012x-%s-%d", time.Now().UnixMilli(), g.instance, g.seq.Add(1))
}

// deliver writes m to its recipient's inbox (the acknowledgement point)
// and pushes it to the recipient's sessions.
func (g *gateway) deliver(ctx context.Context, m *message) error {
	b, _ := json.Marshal(m)
	if err := g.sdk.SaveState(ctx, store, userKey(m.To, "inbox:"+m.ID), b); err != nil {
		return err
	}
	sessions, err := g.sdk.ScanState(ctx, store, userKey(m.To, "session:"), 0)
	if err != nil {
		g.log.Warn("looking up sessions; the message waits in the inbox", "user", m.To, "err", err)
		return nil
	}
	for _, it := range sessions {
		var s session
		if json.Unmarshal(it.Value, &s) != nil {
			continue
		}
		if s.Gateway == g.instance {
			// The connection is here: no call through the runtime.
			if err := g.pushLocal(ctx, s.Conn, m); err != nil {
				_ = g.sdk.DeleteState(ctx, store, it.Key, sdk.WithETag(it.ETag))
			}
			continue
		}
		body, _ := json.Marshal(pushRequest{Conn: s.Conn, Message: *m})
		_, err := g.sdk.Invoke(ctx, "gateway", "push", body, sdk.ContentType("application/json"), sdk.Instance(s.Gateway))
		switch {
		case err == nil:
		case errors.Is(err, sdk.ErrInstanceNotFound), errors.Is(err, sdk.ErrNotFound):
			// The gateway is gone, or no longer holds the connection:
			// the session is stale (unless a heartbeat just wrote it
			// again: the ETag keeps that one). The message stays in the
			// inbox.
			_ = g.sdk.DeleteState(ctx, store, it.Key, sdk.WithETag(it.ETag))
		default:
			g.log.Warn("push failed; the message waits in the inbox", "user", m.To, "gateway", s.Gateway, "err", err)
		}
	}
	return nil
}

type pushRequest struct {
	Conn    string  `json:"conn"`
	Message message `json:"message"`
}

// push is another gateway's delivery to a connection held here.
func (g *gateway) push(w http.ResponseWriter, r *http.Request) {
	var p pushRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 2*maxFrame)).Decode(&p); err != nil {
		http.Error(w, "malformed push: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := g.pushLocal(r.Context(), p.Conn, &p.Message); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// pushLocal writes m to the connection id held here.
func (g *gateway) pushLocal(ctx context.Context, id string, m *message) error {
	g.mu.Lock()
	c := g.conns[id]
	g.mu.Unlock()
	if c == nil || c.user != m.To {
		return errors.New("no such connection here")
	}
	if c.wasDelivered(m.ID) {
		return nil
	}
	if err := c.write(ctx, msgFrame(m)); err != nil {
		return fmt.Errorf("the connection failed: %w", err)
	}
	return nil
}

// consumeGroups fans group messages out to their members' inboxes, and
// subscribes again if the runtime refused the subscription.
func (g *gateway) consumeGroups(ctx context.Context) {
	for ctx.Err() == nil {
		if err := g.subscribeGroups(ctx); err != nil && ctx.Err() == nil {
			g.log.Error("group subscription ended; subscribing again in 5 s", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
}

func (g *gateway) subscribeGroups(ctx context.Context) error {
	return g.sdk.Subscribe(ctx, pubsub, groupTopic, func(ctx context.Context, ev *sdk.Event) error {
		var m message
		if err := json.Unmarshal(ev.Data, &m); err != nil || m.Group == "" {
			return sdk.ErrDrop
		}
		members, err := g.sdk.ScanState(ctx, store, "{g:"+m.Group+"}:member:", 0)
		if err != nil {
			return err
		}
		for _, it := range members {
			user := it.Key[strings.LastIndexByte(it.Key, ':')+1:]
			if user == m.From {
				continue
			}
			mm := m
			mm.To = user
			// The same id for every redelivery: the inbox keeps one.
			mm.ID = m.ID + ":" + user
			if err := g.deliver(ctx, &mm); err != nil {
				return err
			}
		}
		return nil
	})
}

func randomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}
