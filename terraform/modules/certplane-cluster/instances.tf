# One instance per node. Its identity (node id, IP, TLS certificate) and its state (the data volume)
# live in resources of their own, so replacing the instance (a new AMI, a lost host) keeps both.

resource "aws_ebs_volume" "data" {
  for_each          = local.nodes
  availability_zone = each.value.az
  size              = var.data_volume_size_gb
  type              = "gp3"
  iops              = var.data_volume_iops
  throughput        = var.data_volume_throughput
  encrypted         = true
  kms_key_id        = aws_kms_key.data.arn
  tags = merge(local.tags, {
    Name                = "${var.name}-node-${each.key}-data"
    "certplane:node-id" = each.key
    "certplane:backup"  = "true"
  })

  lifecycle {
    # The volume holds the node's Raft log and state: never destroy it by accident.
    prevent_destroy = true
  }
}

resource "aws_instance" "node" {
  for_each = local.nodes

  ami                  = each.value.ami
  instance_type        = var.instance_type
  iam_instance_profile = aws_iam_instance_profile.node.name
  ebs_optimized        = true
  monitoring           = true

  network_interface {
    network_interface_id = aws_network_interface.node[each.key].id
    device_index         = 0
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gb
    encrypted             = true
    kms_key_id            = aws_kms_key.data.arn
    delete_on_termination = true
    # Tags set here rather than with volume_tags, which would also claim the data volume.
    tags = merge(local.tags, { Name = "${var.name}-node-${each.key}-root" })
  }

  user_data = templatefile("${path.module}/../../../deploy/cloud-init/user-data.yaml.tftpl", {
    cluster_name         = var.name
    node_id              = each.value.id
    node_ip              = each.value.ip
    api_port             = var.api_port
    cluster_port         = var.cluster_port
    data_dir             = local.data_dir
    data_volume_id       = aws_ebs_volume.data[each.key].id
    region               = local.region
    kek_source_type      = var.kek_source.type
    kek_source_id        = var.kek_source.id
    tls_ssm_prefix       = var.tls_ssm_prefix
    join_token_parameter = contains(local.initial_member_ids, each.value.id) ? "" : coalesce(var.join_token_ssm_parameter, "")
    initial_cluster      = contains(local.initial_member_ids, each.value.id) ? local.initial_cluster : ""
    join_urls = join(" ", [
      for k, n in local.nodes : "http://${n.ip}:${var.api_port}" if k != each.key
    ])
    start_mode       = var.start_mode
    certplane_binary = var.certplane_binary_path
    heartbeat_ms     = var.raft_timing.heartbeat_ms
    election_min_ms  = var.raft_timing.election_min_ms
    election_max_ms  = var.raft_timing.election_max_ms
    log_filter       = var.log_filter
    systemd_unit     = file("${path.module}/../../../deploy/systemd/certplane.service")
  })
  user_data_replace_on_change = false

  lifecycle {
    # User data acts only at an instance's first boot. A change (say, to initial_member_ids)
    # reaches each node when that instance is next replaced, one at a time, never by stopping
    # every node at once.
    ignore_changes = [user_data]
  }

  tags = merge(local.tags, { Name = "${var.name}-node-${each.key}", "certplane:node-id" = each.key })

  depends_on = [aws_iam_role_policy.node, aws_iam_role_policy_attachment.ssm_core]
}

resource "aws_volume_attachment" "data" {
  for_each    = local.nodes
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.data[each.key].id
  instance_id = aws_instance.node[each.key].id
  # Stop certplane's instance before detaching, so RocksDB is closed cleanly.
  stop_instance_before_detaching = true
}
