package cluster

import "mecha/internal/clustermap"

// MapSource is the cluster map a runtime follows (clustermap.Source).
type MapSource = clustermap.Source

// MapVar is the map the runtime stores each applied one into
// (clustermap.Var).
type MapVar = clustermap.Var

// NewMapVar returns a MapVar holding m (clustermap.New() when nil).
func NewMapVar(m *clustermap.Map) *MapVar { return clustermap.NewVar(m) }
