// Package api holds what the HTTP and gRPC API servers share: their
// dependencies and the metadata document.
package api

import (
	"context"
	"log/slog"

	"mecha/components"
	"mecha/internal/authtoken"
	"mecha/internal/netlimit"
	"mecha/runtime/blocks"
	"mecha/runtime/invoke"
	"mecha/runtime/metrics"
	"mecha/runtime/peer"
	"mecha/runtime/resiliency"
	"mecha/runtime/subscriptions"
)

// Deps are the runtime services an API server calls.
type Deps struct {
	AppID    string
	Blocks   *blocks.Blocks
	Invoker  *invoke.Invoker
	Local    *invoke.Local
	Subs     *subscriptions.Manager
	Metrics  *metrics.Metrics
	Log      *slog.Logger
	Metadata MetadataProvider
	// APILogging logs every API call at info level.
	APILogging bool
	// MaxRequestBytes caps request bodies.
	MaxRequestBytes int
	// Shutdown starts a graceful shutdown of the runtime; it returns at once.
	Shutdown func()
	// Ready reports whether the runtime finished starting (healthz).
	Ready func() bool
	// OutboundReady reports whether the outbound API serves (healthz/outbound).
	OutboundReady func() bool
	// APIToken, when set (DAPR_API_TOKEN), must come with every API call
	// but the health checks, in the dapr-api-token header or gRPC
	// metadata.
	APIToken string
	// Resiliency holds the Resiliency policies applied to invocations;
	// nil applies none.
	Resiliency *resiliency.Store
	// Context ends when the runtime stops for good (its shutdown's grace
	// period over): every call's context derives from it.
	Context context.Context
	// Timeouts bound the connections' headers, idleness and bodies.
	Timeouts netlimit.Timeouts
	// GRPCProxy, when set, directs calls to gRPC services the runtime does
	// not implement, by their dapr-app-id metadata (Dapr's gRPC proxying).
	GRPCProxy peer.Router
}

// TokenOK reports whether got is the API token (in constant time), or no
// token is required.
func (d *Deps) TokenOK(got []byte) bool { return authtoken.Allows(got, d.APIToken) }

// MetadataProvider serves the metadata API.
type MetadataProvider interface {
	Metadata() *Metadata
	// SetExtended sets an extended attribute, or refuses it (past the
	// limits on size and count) with an error for the caller.
	SetExtended(key, value string) error
}

// Metadata is Dapr's metadata document (GET /v1.0/metadata).
type Metadata struct {
	ID                      string                   `json:"id"`
	RuntimeVersion          string                   `json:"runtimeVersion"`
	EnabledFeatures         []string                 `json:"enabledFeatures"`
	Actors                  []any                    `json:"actors"`
	Components              []ComponentInfo          `json:"components"`
	Extended                map[string]string        `json:"extended"`
	Subscriptions           []SubscriptionInfo       `json:"subscriptions"`
	HTTPEndpoints           []any                    `json:"httpEndpoints"`
	AppConnectionProperties *AppConnectionProperties `json:"appConnectionProperties,omitempty"`
}

// AddComponents lists loaded components in the document.
func (m *Metadata) AddComponents(infos []components.Info) {
	for _, c := range infos {
		m.Components = append(m.Components, ComponentInfo{Name: c.Name, Type: c.Type, Version: c.Version, Capabilities: c.Capabilities})
	}
}

// AddSubscriptions lists active subscriptions in the document.
func (m *Metadata) AddSubscriptions(list []subscriptions.Info) {
	for _, s := range list {
		si := SubscriptionInfo{PubsubName: s.PubsubName, Topic: s.Topic, Metadata: s.Metadata, DeadLetterTopic: s.DeadLetterTopic, Type: s.Type}
		for _, r := range s.Rules {
			si.Rules = append(si.Rules, RuleInfo{Match: r.Match, Path: r.Path})
		}
		m.Subscriptions = append(m.Subscriptions, si)
	}
}

// ComponentInfo is a loaded component.
type ComponentInfo struct {
	Name         string   `json:"name"`
	Type         string   `json:"type"`
	Version      string   `json:"version"`
	Capabilities []string `json:"capabilities,omitempty"`
}

// SubscriptionInfo is an active subscription.
type SubscriptionInfo struct {
	PubsubName      string            `json:"pubsubname"`
	Topic           string            `json:"topic"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	Rules           []RuleInfo        `json:"rules,omitempty"`
	DeadLetterTopic string            `json:"deadLetterTopic,omitempty"`
	Type            string            `json:"type"`
}

// RuleInfo is a routing rule.
type RuleInfo struct {
	Match string `json:"match,omitempty"`
	Path  string `json:"path"`
}

// AppConnectionProperties describes how the runtime reaches its app.
type AppConnectionProperties struct {
	Port           int        `json:"port,omitempty"`
	Protocol       string     `json:"protocol,omitempty"`
	ChannelAddress string     `json:"channelAddress,omitempty"`
	MaxConcurrency int        `json:"maxConcurrency,omitempty"`
	Health         *AppHealth `json:"health,omitempty"`
}

// AppHealth is the app health check configuration.
type AppHealth struct {
	HealthCheckPath     string `json:"healthCheckPath,omitempty"`
	HealthProbeInterval string `json:"healthProbeInterval,omitempty"`
	HealthProbeTimeout  string `json:"healthProbeTimeout,omitempty"`
	HealthThreshold     int32  `json:"healthThreshold,omitempty"`
}
