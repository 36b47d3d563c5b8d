# VIP control: clients inside the VPC reach the service at 10.1.0.10, an address OUTSIDE the VPC CIDR
# (10.0.0.0/16). On failover the /32 route for it in every private route table is re-pointed at the new
# active node's ENI (source/dest check off), and the VIP is bound on that node.
cluster "web" {
  api_port = 7402                      # node-to-node control API (TLS, cluster CA)
}

secrets {                              # written by the provider's user_data; defaults shown
  heartbeat_key_file = "/etc/tandem/heartbeat.key"
  ca_cert_file       = "/etc/tandem/ca.crt"
  node_cert_file     = "/etc/tandem/node.crt"
  node_key_file      = "/etc/tandem/node.key"
}

node "node-a" {
  private_ip        = "10.0.1.10"      # chosen by the operator: known before the instance exists
  availability_zone = "us-east-1a"     # one node per zone
}

node "node-b" {
  private_ip        = "10.0.2.10"
  availability_zone = "us-east-1b"
}

heartbeat {
  interval = "1s"                      # a heartbeat per interconnect per second
  timeout  = "5s"                      # peer lost after 5 s of silence on every interconnect
}

interconnect "primary" {
  port = 7400                          # UDP; addresses default to each node's private_ip
}

np_resolution {
  on_isolated = "stop_groups"          # an isolated node stops what it runs
  timeout     = "2s"

  ping {                               # the NAT instance of each node's own zone
    address = "10.0.101.5"
    nodes   = ["node-a"]
  }

  ping {
    address = "10.0.102.5"
    nodes   = ["node-b"]
  }

  tcp {                                # the regional EC2 endpoint, for both nodes
    address = "ec2.us-east-1.amazonaws.com:443"
  }
}

arbitration {
  table          = "tandem-web-leases" # one lease item per group, conditional writes
  ttl            = "5s"                # > 2 x renew_interval
  renew_interval = "1s"
}

group "web" {
  servers  = ["node-a", "node-b"]      # priority order
  failback = "manual"

  resource "mirror_disk" "data" {
    data_device     = "/dev/nvme1n1p2"
    metadata_device = "/dev/nvme1n1p1"
    mount_point     = "/srv/data"
    filesystem      = "ext4"
  }

  resource "exec" "app" {
    start      = "systemctl start myapp"
    stop       = "systemctl stop myapp"
    probe      = "systemctl is-active --quiet myapp"
    depends_on = ["data"]              # mount first, then start the app
  }

  resource "aws_vip" "vip" {
    ip              = "10.1.0.10"
    vpc_id          = "vpc-0a1b2c3d4e5f60718"
    route_table_ids = ["rtb-0a1b2c3d4e5f60001", "rtb-0a1b2c3d4e5f60002"]
    vpc_cidrs       = ["10.0.0.0/16"]  # lets the offline check see that the VIP is outside
    depends_on      = ["app"]

    override "node-b" {                # "Set Up Individually": another device name on node-b
      device = "ens6"
    }
  }
  # An aws_vip monitor for "vip" is implied (named "vip-monitor").
}

monitor "mirror" "data-mirror" {
  resource = "data"
}

monitor "aws_az" "zone" {
  interval     = "60s"
  on_aws_error = "warn"                # an EC2 API outage alone never fails over
}
