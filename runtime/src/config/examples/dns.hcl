# DNS name control: clients resolve app.example.internal. through a private hosted zone; on failover the A
# record is UPSERTed to the new active node's private IP (and DELETEd when the group stops).
cluster "db" {}

node "db-a" {
  private_ip        = "10.0.1.20"
  availability_zone = "ap-northeast-1a"
}

node "db-c" {
  private_ip        = "10.0.3.20"
  availability_zone = "ap-northeast-1c"
}

heartbeat {
  interval = "200ms"
  timeout  = "1s"
}

arbitration {
  ttl            = "3s"
  renew_interval = "500ms"
}

group "db" {
  servers  = ["db-a", "db-c"]
  failback = "auto"

  resource "exec" "postgres" {
    start         = "systemctl start postgresql"
    stop          = "systemctl stop postgresql"
    start_timeout = "2m"
    env = {
      PGDATA = "/srv/pg"
    }
  }

  resource "aws_dns" "name" {
    hosted_zone_id       = "Z0123456789ABCDEFGHIJ"
    record_name          = "app.example.internal."  # lower case, trailing dot
    ttl                  = 60
    delete_on_deactivate = true
    # No ip: each node registers its own private_ip. An override could set another address per node:
    override "db-c" {
      ip = "10.0.3.21"
    }
  }
}

monitor "ip" "gateway" {               # subnet health: ping each zone's NAT
  targets = ["10.0.101.5"]

  override "db-c" {
    targets = ["10.0.103.5"]
  }
}
