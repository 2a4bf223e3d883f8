terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.x: aws_instance attaches an existing network interface through `network_interface`
      # blocks (the 6.x provider replaces them), and aws_lb accepts security groups on NLBs.
      version = ">= 5.40.0, < 6.0.0"
    }
  }
}
