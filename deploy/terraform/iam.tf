# The chorus pods' AWS identity (EKS Pod Identity, service account chorus/chorus): read and write the bucket,
# use the KMS key for it. With it, CHORUS_STORE__S3_KEY/SECRET stay empty in the Secret chorus-secrets.
data "aws_iam_policy_document" "pod_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]

    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "chorus_pods" {
  statement {
    sid       = "ListBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.chorus.arn]
  }

  statement {
    sid       = "Objects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.chorus.arn}/*"]
  }

  statement {
    sid       = "BucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.chorus.arn]
  }
}

resource "aws_iam_role" "chorus_pods" {
  name               = "${var.name}-pods"
  assume_role_policy = data.aws_iam_policy_document.pod_assume.json
}

resource "aws_iam_role_policy" "chorus_pods" {
  name   = "chorus-bucket"
  role   = aws_iam_role.chorus_pods.id
  policy = data.aws_iam_policy_document.chorus_pods.json
}

resource "aws_eks_pod_identity_association" "chorus" {
  cluster_name    = aws_eks_cluster.chorus.name
  namespace       = "chorus"
  service_account = "chorus"
  role_arn        = aws_iam_role.chorus_pods.arn
  depends_on      = [aws_eks_addon.pod_identity]
}
