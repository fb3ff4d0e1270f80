package components

import (
	"log/slog"

	cronbinding "github.com/dapr/components-contrib/bindings/cron"
	httpbinding "github.com/dapr/components-contrib/bindings/http"
	kafkabinding "github.com/dapr/components-contrib/bindings/kafka"
	inmemorypubsub "github.com/dapr/components-contrib/pubsub/in-memory"
	kafkapubsub "github.com/dapr/components-contrib/pubsub/kafka"
	envsecrets "github.com/dapr/components-contrib/secretstores/local/env"
	filesecrets "github.com/dapr/components-contrib/secretstores/local/file"
	inmemorystate "github.com/dapr/components-contrib/state/in-memory"
	mysqlstate "github.com/dapr/components-contrib/state/mysql"
	"github.com/dapr/kit/logger"
	"github.com/twmb/franz-go/pkg/sasl"

	"mecha/bindings/brokerbinding"
	"mecha/broker"
	"mecha/broker/mechapubsub"
	"mecha/statestore"
)

// RegisterContrib registers the curated set of components-contrib
// components that mecha ships with. The default build has those that
// bring no cloud SDK with them; state.redis, pubsub.redis and
// state.postgresql (which bring the Azure and AWS SDKs, for their cloud
// sign-in options) are in builds with the tags in tagged (see README,
// "Build").
func RegisterContrib(r *Registry) {
	for _, f := range taggedContrib {
		f(r)
	}
	r.Register("state.in-memory", "v1", func(l logger.Logger) any { return inmemorystate.NewInMemoryStateStore(l) })
	r.Register("state.mysql", "v1", func(l logger.Logger) any { return mysqlstate.NewMySQLStateStore(l) })
	r.Register("pubsub.in-memory", "v1", func(l logger.Logger) any { return inmemorypubsub.New(l) })
	r.Register("pubsub.kafka", "v1", func(l logger.Logger) any { return kafkapubsub.NewKafka(l) })
	r.Register("bindings.kafka", "v1", func(l logger.Logger) any { return kafkabinding.NewKafka(l) })
	r.Register("bindings.cron", "v1", func(l logger.Logger) any { return cronbinding.NewCron(l) })
	r.Register("bindings.http", "v1", func(l logger.Logger) any { return httpbinding.NewHTTP(l) })
	r.Register("secretstores.local.env", "v1", func(l logger.Logger) any { return envsecrets.NewEnvSecretStore(l) })
	r.Register("secretstores.local.file", "v1", func(l logger.Logger) any { return filesecrets.NewLocalSecretStore(l) })
}

// EmbeddedDefaults are the components `mecha run` serves when no resources
// path is given, so that Dapr quickstarts run unchanged: Crux (state.crux,
// durable in --data-dir) as "statestore", and as "pubsub" the embedded
// broker (pubsub.mecha), or contrib's in-memory pubsub when the broker is
// off (--broker=false).
func EmbeddedDefaults(broker bool) []*Component {
	ps := "pubsub.mecha"
	if !broker {
		ps = "pubsub.in-memory"
	}
	return []*Component{
		{APIVersion: "dapr.io/v1alpha1", Kind: "Component", Metadata: ObjectMeta{Name: "statestore"},
			Spec: ComponentSpec{Type: "state.crux", Version: "v1"}},
		{APIVersion: "dapr.io/v1alpha1", Kind: "Component", Metadata: ObjectMeta{Name: "pubsub"},
			Spec: ComponentSpec{Type: ps, Version: "v1"}},
	}
}

// MechaOptions configure mecha's own components.
type MechaOptions struct {
	// DataDir is --data-dir: state.crux keeps each store in
	// <DataDir>/crux/<component name> unless its metadata sets dataDir.
	DataDir string
	// MaxValueBytes is --max-value-bytes.
	MaxValueBytes int
	Logger        *slog.Logger
	// Brokers is host:port of the embedded broker; empty when
	// --broker=false.
	Brokers string
	// Broker is the embedded broker, nil when --broker=false:
	// pubsub.mecha and bindings.mecha whose metadata names no other
	// brokers call it in-process.
	Broker broker.Local
	// AppID is the app's id: bindings.mecha's default consumer group.
	AppID string
	// CruxBackend is what state.crux stores through (a cluster router),
	// and CruxClientOnly says this runtime opens no engine of its own
	// (statestore.ComponentDefaults' Backend and ClientOnly).
	CruxBackend    func(name string, local *statestore.Engine) (statestore.Backend, error)
	CruxClientOnly bool
	// BrokerSASL is the runtime's own credentials for Brokers, which
	// pubsub.mecha and bindings.mecha use when their metadata names no
	// brokers and no credentials (a broker cluster whose brokers
	// authenticate).
	BrokerSASL sasl.Mechanism
}

// RegisterMecha registers mecha's own components: state.crux, and on
// the broker (o.Broker in-process, unless their metadata sets other
// brokers) pubsub.mecha and bindings.mecha.
func RegisterMecha(r *Registry, o MechaOptions) {
	r.Register("state.crux", "v1", func(l logger.Logger) any {
		return statestore.NewComponent(l, statestore.ComponentDefaults{DataDir: o.DataDir, MaxValueBytes: o.MaxValueBytes, Logger: o.Logger,
			Backend: o.CruxBackend, ClientOnly: o.CruxClientOnly})
	})
	r.Register("pubsub.mecha", "v1", func(l logger.Logger) any {
		return mechapubsub.New(l, mechapubsub.Defaults{Brokers: o.Brokers, Broker: o.Broker, Logger: o.Logger, SASL: o.BrokerSASL})
	})
	r.Register("bindings.mecha", "v1", func(l logger.Logger) any {
		return brokerbinding.New(l, brokerbinding.Defaults{Brokers: o.Brokers, Broker: o.Broker, Logger: o.Logger, AppID: o.AppID, SASL: o.BrokerSASL})
	})
}

// taggedContrib are the registrations of components built in by a build
// tag (contrib_*.go).
var taggedContrib []func(*Registry)

// tagged names, for each component type that needs one, the build tag
// that builds it in; contrib_all builds in every one.
var tagged = map[string]string{
	"state.redis@v1":      "redis",
	"pubsub.redis@v1":     "redis",
	"state.postgresql@v1": "postgresql",
	"state.postgresql@v2": "postgresql",
}
