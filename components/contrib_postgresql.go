//go:build postgresql || contrib_all

package components

import (
	postgresv1 "github.com/dapr/components-contrib/state/postgresql/v1"
	postgresv2 "github.com/dapr/components-contrib/state/postgresql/v2"
	"github.com/dapr/kit/logger"
)

func init() {
	taggedContrib = append(taggedContrib, func(r *Registry) {
		r.Register("state.postgresql", "v1", func(l logger.Logger) any { return postgresv1.NewPostgreSQLStateStore(l) })
		r.Register("state.postgresql", "v2", func(l logger.Logger) any { return postgresv2.NewPostgreSQLStateStore(l) })
	})
}
