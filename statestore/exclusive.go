package statestore

// ExclusiveResource names the data directory the store holds locked: the
// runtime's hot reload closes this instance before it opens a new
// configuration of it (components.Exclusive).
func (c *Component) ExclusiveResource() string {
	if c.engine == nil {
		return "data directory"
	}
	return "data directory " + c.engine.opts.Dir
}
