package spec

import "time"

// Limits of the loader. Whatever is in a Git repository, loading it costs
// bounded time and memory, and every value an App can hold is within a range
// the reconciler and LXD can act on. Anything over a limit is a diagnostic,
// never a crash; a file whose apps cannot be known because of a limit is
// listed in Result.Unparsable, so nothing is pruned in that run.
const (
	// MaxFileSize is the largest spec file berth reads: 1 MiB. A larger
	// file is an error on that file and is not read.
	MaxFileSize = 1 << 20
	// MaxTreeSize bounds all spec files of one tree together: 16 MiB.
	// Files past the budget are errors and are not read.
	MaxTreeSize = 16 << 20
	// MaxFiles bounds the number of spec files (*.yaml, *.yml) in one tree:
	// 1000. Files past it are errors and are not read.
	MaxFiles = 1000
	// MaxDocuments bounds the YAML documents in one file: 1000.
	MaxDocuments = 1000
	// MaxDocumentNodes bounds the YAML nodes (keys, values, list items)
	// written in one document: 50,000. A real App has a few hundred.
	MaxDocumentNodes = 50_000

	// MaxDocumentExpansion, MaxFileExpansion and MaxTreeExpansion bound the
	// work of reading a document, a file and the whole tree once aliases
	// (*anchor) and merge keys (<<) are expanded, so that a "billion laughs"
	// file, or many small alias-heavy documents, cost milliseconds. The unit
	// is one node visited; a string value also costs one unit per 64 bytes.
	// Anchors are shared between the documents of a file, so the file and
	// tree budgets matter as much as the document's.
	MaxDocumentExpansion = 200_000
	MaxFileExpansion     = 2_000_000
	MaxTreeExpansion     = 8_000_000

	// MaxReplicas is the most replicas an app may ask for: 1000.
	// spec.update.maxUnavailable is at most the same.
	MaxReplicas = 1000
	// MaxItems bounds every list and mapping of an App: command, env,
	// volumes, profiles, config, devices and each device's keys, and the
	// healthcheck test: 1000 entries each.
	MaxItems = 1000
	// MaxStringLen bounds every string value of an App, cloudInit
	// included: 256 KiB.
	MaxStringLen = 256 << 10
	// MaxHealthcheckRetries bounds spec.container.healthcheck.retries: 100.
	MaxHealthcheckRetries = 100
	// MaxDuration bounds every duration of an App (healthcheck interval,
	// timeout and startPeriod, update.healthTimeout): 24h.
	MaxDuration = 24 * time.Hour
	// MinHealthcheckDuration is Docker's lower bound on the healthcheck
	// interval, timeout and startPeriod: 1ms.
	MinHealthcheckDuration = time.Millisecond
	// MinHealthTimeout is the lower bound on update.healthTimeout: 1s.
	MinHealthTimeout = time.Second
	// MinDependencyTimeout is the lower bound on dependsOn[].timeout: 1s.
	MinDependencyTimeout = time.Second
	// MaxMemory bounds spec.system.limits.memory: 1 PiB (2^50 bytes).
	MaxMemory = 1 << 50
	// MaxPorts bounds spec.container.ports and spec.system.ports: 100. Each TCP port is probed
	// on every replica at each observe, and each is an SRV record.
	MaxPorts = 100
	// MaxDrainDelay bounds spec.update.drainDelay: 10m.
	MaxDrainDelay = 10 * time.Minute
	// MaxCPUs bounds spec.system.limits.cpu: a count of at most 4096 CPUs,
	// or a CPU set of CPU numbers 0 to 4095.
	MaxCPUs = 4096

	// MaxProvisionFiles bounds spec.system.provision.files: 100 files.
	MaxProvisionFiles = 100
	// MaxProvisionFileSize is the largest provision file berth reads from
	// the repository: 4 MiB. Provision files are configs and scripts; a
	// large artefact belongs in an image or a package.
	MaxProvisionFileSize = 4 << 20
	// MaxProvisionTreeSize bounds the provision files of one spec tree
	// together (each distinct file counted once): 32 MiB. Their content is
	// held in memory with the desired state.
	MaxProvisionTreeSize = 32 << 20
	// MinProvisionTimeout is the lower bound on provision.timeout: 1s.
	// Its upper bound is MaxDuration.
	MinProvisionTimeout = time.Second
	// MinProvisionEvery is the shortest provision.every (other than 0,
	// off): 1m. Its upper bound is MaxDuration.
	MinProvisionEvery = time.Minute
	// MaxID bounds the uid and gid of a provision file's owner: 65535,
	// the highest id of an unprivileged container's default id map (65536
	// ids). LXD cannot write a file owned by an id outside the map; a
	// larger map is the host's own setup, which the spec cannot see.
	MaxID = 1<<16 - 1
)
