# One customer-managed key for the EKS secrets, the database, its Performance Insights and the bucket.
data "aws_iam_policy_document" "kms" {
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "chorus" {
  description             = "${var.name}: EKS secrets, RDS, S3"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "chorus" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.chorus.key_id
}
