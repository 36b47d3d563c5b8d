# EIP control: clients on the Internet reach the service at an Elastic IP, which is disassociated from the
# old node's ENI and associated with the new one. Nodes live in public subnets.
cluster "shop" {}

node "web-1" {
  private_ip        = "10.0.11.10"
  availability_zone = "eu-west-1a"
}

node "web-2" {
  private_ip        = "10.0.12.10"
  availability_zone = "eu-west-1b"
}

np_resolution {
  tcp {
    address = "ec2.eu-west-1.amazonaws.com:443"
  }
}

group "shop" {
  servers = ["web-1", "web-2"]

  resource "exec" "nginx" {
    start = "systemctl start nginx"
    stop  = "systemctl stop nginx"
    probe = "curl -fsS -o /dev/null http://127.0.0.1/"
  }

  resource "aws_eip" "public" {
    allocation_id = "eipalloc-0123456789abcdef0"
    depends_on    = ["nginx"]
  }
}

# Replaces the implied aws_eip monitor for "public": check every 15 s, and recover even when the AWS API
# itself fails.
monitor "aws_eip" "public-eip" {
  resource     = "public"
  interval     = "15s"
  on_aws_error = "recover"
}

monitor "tcp" "https" {
  address         = "127.0.0.1:443"
  when            = "active"
  recovery_target = "nginx"
  recovery_action = "restart"
}
