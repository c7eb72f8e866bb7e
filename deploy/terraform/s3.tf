# S3 for chorus blobs (store.blob_url = s3://BUCKET/chorus) and model weights (s3://BUCKET/models/..., read by the
# node-local cache): KMS-encrypted, versioned, every form of public access blocked, TLS-only.
resource "aws_s3_bucket" "chorus" {
  bucket = local.bucket
}

resource "aws_s3_bucket_public_access_block" "chorus" {
  bucket                  = aws_s3_bucket.chorus.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "chorus" {
  bucket = aws_s3_bucket.chorus.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "chorus" {
  bucket = aws_s3_bucket.chorus.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "chorus" {
  bucket = aws_s3_bucket.chorus.id

  rule {
    bucket_key_enabled = true

    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.chorus.arn
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "chorus" {
  bucket = aws_s3_bucket.chorus.id

  rule {
    id     = "expire-old-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.chorus]
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.chorus.arn, "${aws_s3_bucket.chorus.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "chorus" {
  bucket     = aws_s3_bucket.chorus.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.chorus]
}
