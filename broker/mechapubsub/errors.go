package mechapubsub

import (
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
)

// TooLargeError is a publish refused for its size, by this component's
// maxMessageBytes or by the broker's max.message.bytes. The runtime
// answers it with 413 (ResourceExhausted over gRPC).
type TooLargeError struct {
	Topic string
	// Limit is the component's maxMessageBytes.
	Limit int
	Err   error
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("event for topic %s is too large: it is over the component's maxMessageBytes (%d bytes, "+
		"spec.metadata maxMessageBytes) or the broker's max.message.bytes (the embedded broker's --broker-max-message-bytes, "+
		"or the topic's max.message.bytes); raise the limit that applies or send less: %v", e.Topic, e.Limit, e.Err)
}

func (e *TooLargeError) Unwrap() error { return e.Err }

// MessageTooLarge marks the error for the runtime's error mapping.
func (e *TooLargeError) MessageTooLarge() bool { return true }

// TopicError is a topic name the broker cannot take. The runtime answers
// it with 400 (InvalidArgument over gRPC).
type TopicError struct {
	Topic   string
	Problem string
}

func (e *TopicError) Error() string {
	return fmt.Sprintf("topic %q is not a valid Kafka topic name: %s", e.Topic, e.Problem)
}

// InvalidInput marks the error for the runtime's error mapping.
func (e *TopicError) InvalidInput() bool { return true }

// BadRequest tells the API to answer 400 where a publish failure is
// otherwise a 500 (as in daprd).
func (e *TopicError) BadRequest() bool { return true }

// maxTopicLen is Kafka's limit on a topic name (249 characters).
const maxTopicLen = 249

// CheckTopic reports a name Kafka refuses: empty, ".", "..", longer than
// 249 characters, or with a character outside [a-zA-Z0-9._-].
func CheckTopic(topic string) error {
	switch {
	case topic == "":
		return &TopicError{topic, "it is empty"}
	case topic == "." || topic == "..":
		return &TopicError{topic, `"." and ".." are reserved`}
	case len(topic) > maxTopicLen:
		return &TopicError{topic[:32] + "…", fmt.Sprintf("it is %d characters long, over Kafka's limit of %d", len(topic), maxTopicLen)}
	}
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			continue
		}
		return &TopicError{topic, fmt.Sprintf("character %q at byte %d is not one of [a-zA-Z0-9._-]", c, i)}
	}
	return nil
}

// produceError gives a produce failure the type the runtime maps to a
// 4xx when the request is at fault.
func (p *PubSub) produceError(topic string, err error) error {
	switch {
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return &TooLargeError{Topic: topic, Limit: p.opts.MaxMessageBytes, Err: err}
	case errors.Is(err, kerr.InvalidTopicException):
		return &TopicError{topic, err.Error()}
	}
	return err
}
