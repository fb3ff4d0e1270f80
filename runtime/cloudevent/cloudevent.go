// Package cloudevent builds and reads the CloudEvents 1.0 JSON envelopes that
// Dapr wraps published events in.
package cloudevent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/structpb"

	"mecha/internal/jsonstr"
)

// ContentType is the media type of a structured CloudEvent.
const ContentType = "application/cloudevents+json"

// EventType is the type Dapr gives events it wraps.
const EventType = "com.dapr.event.sent"

func init() {
	// The pool amortizes crypto/rand reads over many IDs; publish is hot.
	uuid.EnableRandPool()
}

// ErrInvalid is wrapped by every error about a malformed CloudEvent.
var ErrInvalid = errors.New("invalid cloudevent")

// Envelope holds the fields Dapr puts around published data.
type Envelope struct {
	ID          string // generated when empty
	Source      string // the publishing app-id
	Type        string // EventType when empty
	Topic       string
	PubsubName  string
	ContentType string // of Data; text/plain when empty, as in Dapr
	TraceParent string
	TraceState  string
	// Expiration is an RFC 3339 time after which the event is dropped;
	// empty for none.
	Expiration string
	Data       []byte
}

// IsEnvelope reports, cheaply, whether b looks like a structured
// CloudEvent: a JSON object with a specversion attribute. Records a
// plain Kafka client produced do not, and are wrapped on delivery.
func IsEnvelope(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{' && bytes.Contains(b, []byte(`"specversion"`))
}

// IsJSONContentType reports whether ct is application/json or a +json type.
func IsJSONContentType(ct string) bool {
	ct = mediaType(ct)
	return ct == "application/json" || strings.HasSuffix(ct, "+json") || ct == "text/json"
}

func isTextContentType(ct string) bool {
	ct = mediaType(ct)
	return strings.HasPrefix(ct, "text/") || ct == "application/xml" || strings.HasSuffix(ct, "+xml")
}

func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// Append writes the envelope as JSON to dst. JSON data that parses is
// embedded as is; text data becomes a JSON string; anything else (binary
// content types) goes to data_base64.
func Append(dst []byte, e *Envelope) []byte {
	ct := e.ContentType
	if ct == "" {
		ct = "text/plain"
	}
	typ := e.Type
	if typ == "" {
		typ = EventType
	}
	dst = append(dst, `{"specversion":"1.0","id":`...)
	if e.ID != "" {
		dst = AppendString(dst, e.ID)
	} else {
		id := uuid.New()
		dst = append(dst, '"')
		dst = appendUUID(dst, id)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"source":`...)
	dst = AppendString(dst, e.Source)
	dst = append(dst, `,"type":`...)
	dst = AppendString(dst, typ)
	dst = append(dst, `,"topic":`...)
	dst = AppendString(dst, e.Topic)
	dst = append(dst, `,"pubsubname":`...)
	dst = AppendString(dst, e.PubsubName)
	dst = append(dst, `,"datacontenttype":`...)
	dst = AppendString(dst, ct)
	dst = append(dst, `,"time":"`...)
	dst = time.Now().UTC().AppendFormat(dst, time.RFC3339)
	dst = append(dst, '"')
	if e.Expiration != "" {
		dst = append(dst, `,"expiration":`...)
		dst = AppendString(dst, e.Expiration)
	}
	if e.TraceParent != "" {
		dst = append(dst, `,"traceid":`...)
		dst = AppendString(dst, e.TraceParent)
		dst = append(dst, `,"traceparent":`...)
		dst = AppendString(dst, e.TraceParent)
		dst = append(dst, `,"tracestate":`...)
		dst = AppendString(dst, e.TraceState)
	}
	switch {
	case len(e.Data) == 0:
		// No data field at all: an empty event.
	case IsJSONContentType(ct) && json.Valid(e.Data):
		dst = append(dst, `,"data":`...)
		dst = appendCompact(dst, e.Data)
	case IsJSONContentType(ct) || isTextContentType(ct) || utf8.Valid(e.Data) && !isBinary(ct):
		dst = append(dst, `,"data":`...)
		dst = AppendString(dst, string(e.Data))
	default:
		dst = append(dst, `,"data_base64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, e.Data)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

func isBinary(ct string) bool {
	ct = mediaType(ct)
	return ct == "application/octet-stream" || strings.HasPrefix(ct, "image/") || strings.HasPrefix(ct, "audio/") ||
		strings.HasPrefix(ct, "video/") || ct == "application/protobuf" || ct == "application/x-protobuf"
}

func appendCompact(dst, src []byte) []byte {
	// Compact only when there is whitespace to drop: most bodies are
	// already compact and this keeps the copy cheap.
	if bytes.ContainsAny(src, " \t\r\n") {
		var b bytes.Buffer
		if json.Compact(&b, src) == nil {
			return append(dst, b.Bytes()...)
		}
	}
	return append(dst, src...)
}

const hexDigits = "0123456789abcdef"

func appendUUID(dst []byte, u uuid.UUID) []byte {
	for i, b := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hexDigits[b>>4], hexDigits[b&0xf])
	}
	return dst
}

// AppendString appends s as a JSON string literal. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does.
func AppendString(dst []byte, s string) []byte { return jsonstr.AppendString(dst, s) }

// Event is a parsed CloudEvent, as the runtime needs it for routing and for
// gRPC delivery.
type Event struct {
	ID              string
	Source          string
	Type            string
	SpecVersion     string
	DataContentType string
	Topic           string
	PubsubName      string
	TraceParent     string
	// Data is the payload: raw JSON for JSON data, the text for a JSON
	// string, the decoded bytes for data_base64.
	Data []byte

	// raw is every top-level attribute, undecoded: Fields and Extensions
	// decode what they need of it, so that delivering an event does not
	// decode its data.
	raw map[string]json.RawMessage
}

// Parse reads a structured CloudEvent. It fails on anything that is not a
// JSON object or whose core attributes are not strings. The other
// attributes, data included, are kept as they are, valid JSON, and
// decoded only by Fields and Extensions: a number no float64 holds
// (1e400) in the data reaches a gRPC app as it reaches an HTTP app, in
// the data's bytes, and fails only a routing rule's or an extension's
// decoding.
func Parse(b []byte) (*Event, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object: %v", ErrInvalid, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: null", ErrInvalid)
	}
	e := &Event{raw: raw}
	for _, a := range [...]struct {
		name string
		dst  *string
	}{
		{"id", &e.ID}, {"source", &e.Source}, {"type", &e.Type}, {"specversion", &e.SpecVersion},
		{"datacontenttype", &e.DataContentType}, {"topic", &e.Topic}, {"pubsubname", &e.PubsubName},
		{"traceparent", &e.TraceParent},
	} {
		v, ok := raw[a.name]
		if !ok || string(v) == "null" {
			continue
		}
		s, ok := jsonString(v)
		if !ok {
			return nil, fmt.Errorf("%w: attribute %q must be a string", ErrInvalid, a.name)
		}
		*a.dst = s
	}
	if d, ok := raw["data"]; ok && string(d) != "null" {
		if len(d) > 0 && d[0] == '"' && !IsJSONContentType(e.DataContentType) {
			s, _ := jsonString(d)
			e.Data = []byte(s)
		} else {
			// JSON data, or a JSON string that is itself the JSON
			// document.
			e.Data = d
		}
	} else if d, ok := raw["data_base64"]; ok {
		s, ok := jsonString(d)
		if !ok {
			return nil, fmt.Errorf("%w: attribute \"data_base64\" must be a string", ErrInvalid)
		}
		dec, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: attribute \"data_base64\": %v", ErrInvalid, err)
		}
		e.Data = dec
	}
	return e, nil
}

// jsonString decodes v, a valid JSON value, as a string: without
// encoding/json when it holds no escape (and is valid UTF-8, which
// encoding/json would repair).
func jsonString(v json.RawMessage) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	if body := v[1 : len(v)-1]; bytes.IndexByte(body, '\\') < 0 && utf8.Valid(body) {
		return string(body), true
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false
	}
	return s, true
}

// decodeValue decodes one attribute's value as encoding/json decodes
// into an any.
func decodeValue(v json.RawMessage) (any, error) {
	if s, ok := jsonString(v); ok {
		return s, nil
	}
	var x any
	err := json.Unmarshal(v, &x)
	return x, err
}

// Fields decodes every top-level attribute, data included, for routing
// rules (event.data.kind, event.type, ...).
func (e *Event) Fields() (map[string]any, error) {
	out := make(map[string]any, len(e.raw))
	for k, v := range e.raw {
		x, err := decodeValue(v)
		if err != nil {
			return nil, fmt.Errorf("%w: attribute %q: %v", ErrInvalid, k, err)
		}
		out[k] = x
	}
	return out, nil
}

// coreKeys are the attributes gRPC's TopicEventRequest carries in fields
// of their own; every other one goes to its Extensions. The set is
// Dapr's cloudEventDuplicateKeys, so topic, pubsubname, traceparent and
// time appear in Extensions as they do with Dapr.
var coreKeys = map[string]bool{
	"id": true, "source": true, "datacontenttype": true, "type": true,
	"specversion": true, "data": true, "data_base64": true,
}

// Extensions decodes the attributes that are not core ones, as the
// Extensions of a gRPC TopicEventRequest (Dapr's
// ExtractCloudEventExtensions).
func (e *Event) Extensions() (*structpb.Struct, error) {
	ext := make(map[string]any, len(e.raw))
	for k, v := range e.raw {
		if coreKeys[k] {
			continue
		}
		x, err := decodeValue(v)
		if err != nil {
			return nil, fmt.Errorf("%w: attribute %q: %v", ErrInvalid, k, err)
		}
		ext[k] = x
	}
	s, err := structpb.NewStruct(ext)
	if err != nil {
		return nil, fmt.Errorf("%w: extensions: %w", ErrInvalid, err)
	}
	return s, nil
}

// Expired reports whether a CloudEvent carries an "expiration" attribute
// that has passed. Events without one, or with one that does not parse,
// never expire.
func Expired(b []byte, now time.Time) bool {
	if !bytes.Contains(b, []byte(`"expiration"`)) {
		return false
	}
	var ev struct {
		Expiration string `json:"expiration"`
	}
	if json.Unmarshal(b, &ev) != nil || ev.Expiration == "" {
		return false
	}
	t, err := time.Parse(time.RFC3339, ev.Expiration)
	return err == nil && t.Before(now)
}

// Complete fills the attributes Dapr adds to an event the app already
// wrapped (content type application/cloudevents+json): id, source,
// specversion and type when missing, and always topic and pubsubname.
func Complete(b []byte, source, topic, pubsubName, traceParent string) ([]byte, error) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, fmt.Errorf("%w: body is not a JSON object", ErrInvalid)
	}
	setDefault := func(k string, v string) {
		if s, ok := m[k].(string); !ok || s == "" {
			m[k] = v
		}
	}
	setDefault("id", uuid.NewString())
	setDefault("source", source)
	setDefault("specversion", "1.0")
	setDefault("type", EventType)
	setDefault("datacontenttype", "application/json")
	if traceParent != "" {
		setDefault("traceparent", traceParent)
		setDefault("traceid", traceParent)
	}
	m["topic"] = topic
	m["pubsubname"] = pubsubName
	return json.Marshal(m)
}
