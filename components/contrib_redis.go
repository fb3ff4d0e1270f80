//go:build redis || contrib_all

package components

import (
	redispubsub "github.com/dapr/components-contrib/pubsub/redis"
	redisstate "github.com/dapr/components-contrib/state/redis"
	"github.com/dapr/kit/logger"
)

func init() {
	taggedContrib = append(taggedContrib, func(r *Registry) {
		r.Register("state.redis", "v1", func(l logger.Logger) any { return redisstate.NewRedisStateStore(l) })
		r.Register("pubsub.redis", "v1", func(l logger.Logger) any { return redispubsub.NewRedisStreams(l) })
	})
}
