# One supervisor per host under Nomad: a system job runs one allocation on every
# eligible client, all on the same layout. Nomad places and restarts the supervisors;
# each supervisor starts the nodes of its own host and keeps them alive.
#
#   nomad job run rhai-supervisor.nomad.hcl       (from the directory of layout.rhai)
#
# `node.unique.name` is the Nomad client's name (by default its host name): the
# supervisor's --host, matched against the hosts of the layout's endpoints.

job "rhai-supervisor" {
  type        = "system"
  datacenters = ["dc1"]

  # Only the hosts of this cluster (the others would run a supervisor with no nodes).
  constraint {
    attribute = "${meta.zeek_cluster}"
    value     = "zeek-1"
  }

  group "supervisor" {
    restart {
      attempts = 10
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    task "supervisor" {
      # raw_exec: the workers need the host's network interfaces as they are.
      driver = "raw_exec"

      config {
        command = "/usr/local/bin/rhai-supervisor"
        args = [
          "run",
          "--host", "${node.unique.name}",
          "--socket", "/run/rhai-supervisor/control.sock",
          "local/layout.rhai",
        ]
      }

      # The layout travels with the job: every allocation gets the same file. Other
      # delimiters, so that nothing in a Rhai script is read as a template.
      template {
        data            = file("layout.rhai")
        destination     = "local/layout.rhai"
        left_delimiter  = "[[["
        right_delimiter = "]]]"
        change_mode     = "restart"
      }

      # The supervisor stops its nodes on SIGTERM; give it their stop timeouts.
      kill_signal  = "SIGTERM"
      kill_timeout = "60s"

      resources {
        cpu    = 1000
        memory = 1024
      }
    }
  }
}
