package mechapubsub

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

func TestCheckTopic(t *testing.T) {
	for _, tc := range []struct {
		topic, problem string
	}{
		{"orders", ""},
		{"a.b_c-D9", ""},
		{strings.Repeat("t", 249), ""},
		{"", "empty"},
		{".", "reserved"},
		{"..", "reserved"},
		{strings.Repeat("t", 250), "250 characters long"},
		{"bad topic", `character ' ' at byte 3`},
		{"ünicode", `character 'Ã' at byte 0`},
		{"a/b", `character '/'`},
	} {
		err := CheckTopic(tc.topic)
		if tc.problem == "" {
			if err != nil {
				t.Errorf("CheckTopic(%q) = %v, want nil", tc.topic, err)
			}
			continue
		}
		var in interface{ InvalidInput() bool }
		if err == nil || !strings.Contains(err.Error(), tc.problem) || !errors.As(err, &in) {
			t.Errorf("CheckTopic(%q) = %v, want an InvalidInput error naming %q", tc.topic, err, tc.problem)
		}
	}
}

func TestProduceErrorKinds(t *testing.T) {
	p := &PubSub{opts: ClientOptions{MaxMessageBytes: 1234}}
	var tl interface{ MessageTooLarge() bool }
	for _, cause := range []error{kerr.MessageTooLarge, kerr.RecordListTooLarge} {
		err := fmt.Errorf("wrapped: %w", p.produceError("t", fmt.Errorf("inproc: %w", cause)))
		if !errors.As(err, &tl) || !strings.Contains(err.Error(), "maxMessageBytes (1234 bytes") || !errors.Is(err, cause) {
			t.Errorf("%v: %v is not a MessageTooLarge naming the limit", cause, err)
		}
	}
	var in interface{ InvalidInput() bool }
	if err := p.produceError("t", kerr.InvalidTopicException); !errors.As(err, &in) {
		t.Errorf("InvalidTopicException: %v is not InvalidInput", err)
	}
	other := errors.New("broker down")
	if err := p.produceError("t", other); err != other {
		t.Errorf("other errors pass unchanged, got %v", err)
	}
}
