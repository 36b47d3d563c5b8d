# VPC, public subnets A/B with an Internet gateway, and (private_subnets) private subnets A/B each routed
# through the NAT gateway of its own zone — the network the guides build by hand — plus a gateway endpoint
# so that the nodes reach their lease table without NAT.

data "tandem_availability_zones" "available" {
  state = "available"
}

locals {
  zones = slice(data.tandem_availability_zones.available.names, 0, 2)
}

resource "tandem_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_hostnames = true
  tags                 = { Name = var.name }
}

resource "tandem_internet_gateway" "this" {
  vpc_id = tandem_vpc.this.id
  tags   = { Name = var.name }
}

resource "tandem_subnet" "public" {
  count                   = 2
  vpc_id                  = tandem_vpc.this.id
  cidr_block              = cidrsubnet(var.vpc_cidr, 8, count.index)
  availability_zone       = local.zones[count.index]
  map_public_ip_on_launch = !var.private_subnets
  tags                    = { Name = "${var.name}-public-${local.zones[count.index]}" }
}

resource "tandem_route_table" "public" {
  vpc_id = tandem_vpc.this.id
  tags   = { Name = "${var.name}-public" }
}

resource "tandem_route" "public_default" {
  route_table_id         = tandem_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = tandem_internet_gateway.this.id
}

resource "tandem_route_table_association" "public" {
  count          = 2
  subnet_id      = tandem_subnet.public[count.index].id
  route_table_id = tandem_route_table.public.id
}

resource "tandem_subnet" "private" {
  count             = var.private_subnets ? 2 : 0
  vpc_id            = tandem_vpc.this.id
  cidr_block        = cidrsubnet(var.vpc_cidr, 8, 10 + count.index)
  availability_zone = local.zones[count.index]
  tags              = { Name = "${var.name}-private-${local.zones[count.index]}" }
}

resource "tandem_eip" "nat" {
  count = var.private_subnets ? 2 : 0
  tags  = { Name = "${var.name}-nat-${local.zones[count.index]}" }
}

resource "tandem_nat_gateway" "this" {
  count         = var.private_subnets ? 2 : 0
  subnet_id     = tandem_subnet.public[count.index].id
  allocation_id = tandem_eip.nat[count.index].allocation_id
  tags          = { Name = "${var.name}-${local.zones[count.index]}" }
}

resource "tandem_route_table" "private" {
  count  = var.private_subnets ? 2 : 0
  vpc_id = tandem_vpc.this.id
  tags   = { Name = "${var.name}-private-${local.zones[count.index]}" }
}

resource "tandem_route" "private_default" {
  count                  = var.private_subnets ? 2 : 0
  route_table_id         = tandem_route_table.private[count.index].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = tandem_nat_gateway.this[count.index].id
}

resource "tandem_route_table_association" "private" {
  count          = var.private_subnets ? 2 : 0
  subnet_id      = tandem_subnet.private[count.index].id
  route_table_id = tandem_route_table.private[count.index].id
}

locals {
  route_table_ids = concat([tandem_route_table.public.id], tandem_route_table.private[*].id)
}

# The runtime's lease store (DynamoDB) is reached without NAT, through a gateway endpoint.
resource "tandem_vpc_endpoint" "dynamodb" {
  vpc_id            = tandem_vpc.this.id
  service_name      = "com.amazonaws.${data.tandem_availability_zones.available.id}.dynamodb"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = local.route_table_ids
}
